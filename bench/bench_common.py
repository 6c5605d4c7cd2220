"""Helpers shared by the Python benchmarks (run as `python bench/<name>.py`, so this folder is on sys.path)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model, for the `device` field of CPU-only results (BENCH.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def copy_bandwidth() -> float:
    """Device memory bandwidth ceiling in bytes/s: a 1 GiB device copy (bytes read + written),
    median of 10 after 3 warm-ups, CUDA events."""
    import statistics

    import torch

    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    del x, y
    return 2 * (1 << 30) / statistics.median(ts)


L2_BYTES = 50 * 2**20  # H100 L2


def copies_for(nbytes: int, lo: int = 2, hi: int = 32) -> int:
    """How many copies of an operand of `nbytes` a cold-L2 timing cycles through: together more
    than 2x L2, so no call finds its operand there (clamped to [lo, hi])."""
    return max(lo, min(hi, -(-2 * L2_BYTES // max(nbytes, 1)) + 1))


def graph_time_us(fns, replays: int = 15) -> float:
    """fns: R zero-arg callables (one per weight copy, so that no call finds its weights in L2).
    They are captured into one CUDA graph after a warm-up on a side stream; returns the median
    replay time / R, in microseconds (CUDA events)."""
    import statistics

    import torch

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns[:3]:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / len(fns))
    del g
    return statistics.median(ts)


def map_in_processes(worker, jobs: list, processes: int) -> list:
    """Run `worker(chunk) -> list` over `jobs` split round-robin into `processes` chunks in spawned
    processes (e.g. to fill Triton's on-disk cache in parallel); results in the order of `jobs`."""
    import multiprocessing as mp

    if not jobs:
        return []
    processes = max(1, min(processes, len(jobs)))
    chunks = [jobs[i::processes] for i in range(processes)]
    with mp.get_context("spawn").Pool(processes) as pool:
        res = pool.map(worker, chunks)
    out = [None] * len(jobs)
    for i, r in enumerate(res):
        for j, v in enumerate(r):
            out[i + j * processes] = v
    return out
