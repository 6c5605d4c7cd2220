"""Per-kernel GPU time of one batch-1 decode step of the pod engine (diagnostic, prints only).

Run after bench/pod_engine.py on the same machine (it reuses the random 1B checkpoint that
bench wrote under /tmp, or writes it). Profiles (a) the smallest decode CUDA graph's replay and
(b) eager decode steps, with torch.profiler, and prints the top kernels by GPU time per step.

    python3 bench/pod_decode_profile.py
    python3 bench/pod_decode_profile.py --shape llama-3.1-8b --backends triton,sparse --context 32768
        (c) decode steps of the engine (eng.step(): graph replays plus whatever runs outside them)
            after a --context-token prompt, per attention backend
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))

from edgeserve_pod.config import EngineConfig  # noqa: E402
from edgeserve_pod.engine.engine import LLMEngine  # noqa: E402
from edgeserve_pod.engine.sequence import SamplingParams  # noqa: E402
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint  # noqa: E402


def top(prof, steps: int, label: str, k: int = 14) -> None:
    tot = collections.Counter()
    cnt = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            tot[e.name[:90]] += e.device_time
            cnt[e.name[:90]] += 1
    s = sum(tot.values()) / steps
    print(f"PROFILE {label}: {s:.0f} us of kernels per step, {sum(cnt.values()) / steps:.0f} kernels per step")
    for name, t in tot.most_common(k):
        print(f"PROFILE   {t / steps:8.1f} us  x{cnt[name] / steps:5.1f}  {name}")


def engine_steps(shape: str, backends: list[str], context: int, n: int = 16) -> None:
    path = f"/tmp/{shape}"
    if not os.path.exists(os.path.join(path, "config.json")):
        path = write_random_checkpoint(shape, path, seed=0, device="cuda")
    prompt = torch.randint(0, 128000, (context,), generator=torch.Generator().manual_seed(1)).tolist()
    for backend in backends:
        eng = LLMEngine(EngineConfig(model=path, device="cuda", max_num_batched_tokens=8192, max_num_seqs=8,
                                     max_model_len=context + 512, gpu_memory_utilization=0.85, cuda_graph_max_batch=8,
                                     attention_backend=backend))
        eng.add_request("p", prompt, SamplingParams(max_tokens=n + 8, ignore_eos=True))
        got = 0
        while got < 4:  # prefill chunks, then a few decode steps (graph capture, plans)
            got += sum(len(o.new_token_ids) for o in eng.step())
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                eng.step()
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / n * 1e6
        print(f"PROFILE {shape} {backend} context {context}: {wall:.0f} us wall per engine step (profiled)")
        top(prof, n, f"{backend} engine decode steps", k=24)
        del eng
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default=None)
    ap.add_argument("--backends", default="triton")
    ap.add_argument("--context", type=int, default=32768)
    a = ap.parse_args()
    if a.shape:
        engine_steps(a.shape, a.backends.split(","), a.context)
        return
    path = "/tmp/llama-3.2-1b"
    if not os.path.exists(os.path.join(path, "config.json")):
        path = write_random_checkpoint("llama-3.2-1b", path, seed=0, device="cuda")
    prompt = list(range(100, 132))
    for eager in (False, True):
        eng = LLMEngine(EngineConfig(model=path, device="cuda", max_num_batched_tokens=8192, max_num_seqs=64,
                                     max_model_len=8192, gpu_memory_utilization=0.45, attention_backend="triton",
                                     enforce_eager=eager, kv_cache_blocks=256 if eager else None))
        eng.add_request("w", prompt, SamplingParams(max_tokens=8, ignore_eos=True))
        while eng.has_unfinished():
            eng.step()
        if not eager:
            g = eng.runner.graphs
            key = min(g.graphs)
            graph = g.graphs[key]
            n = 20
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(n):
                    graph.replay()
                torch.cuda.synchronize()
            top(prof, n, f"graph replay {key}")
        else:
            n = 20
            eng.add_request("p", prompt, SamplingParams(max_tokens=n + 1, ignore_eos=True))
            eng.step()  # prefill
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                while eng.has_unfinished():
                    eng.step()
                torch.cuda.synchronize()
            top(prof, n, "eager decode steps")
        del eng
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
