"""KV transfer between two pod processes on one GPU: CUDA IPC vs TCP, and greedy identity.

    python bench/kv_transfer_ipc.py --out DIR                   # GPU: 1B shape, 3000-token prompts
    python bench/kv_transfer_ipc.py --out DIR --device cpu      # dry run of everything but CUDA IPC

Starts two pod servers (edgeserve-pod CLI, no edge): a prefill pod and a decode pod, on a random
Llama-3.2-1B-shaped checkpoint (bf16) written here. For each transport (tcp, cuda_ipc) and each of
`--n` random prompts of `--prompt-tokens` tokens:
  - colocated reference: the prefill pod generates `--max-tokens` greedy tokens by itself;
  - disaggregated: the decode pod gets the request with kv_transfer receive, the prefill pod with
    kv_transfer send; the decode pod's greedy tokens must equal the reference.
Transfer time is the prefill pod's `timing.kv_transfer_ms` (gather + share/encode + PUT until the
decode pod has the blocks); the decode pod's wait + import is reported beside it. The limit is the
KV bytes over the device-to-device copy bandwidth measured in this run (one copy of the bytes).
Writes DIR/<date>-<device-slug>-kv-transfer.json in the BENCH.md format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "gpu-backend"))  # no install needed (as bench/pod_engine.py)
sys.path.insert(0, os.path.dirname(__file__))
from bench_common import cpu_name  # noqa: E402

MODEL_ID = "llama-3.2-1b-random"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ok(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"pod at {url} not healthy after {timeout} s")


async def generate(s: aiohttp.ClientSession, url: str, rid: str, prompt: list[int], max_tokens: int,
                   kv_transfer: dict | None = None) -> tuple[list[int], dict]:
    body = {"request_id": rid, "model": MODEL_ID, "prompt_token_ids": prompt, "max_tokens": max_tokens,
            "ignore_eos": True, "sampling": {"temperature": 0}}
    if kv_transfer:
        body["kv_transfer"] = kv_transfer
    toks, final = [], None
    async with s.post(url + "/v1/generate", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}: {(await r.text())[:300]}")
        async for raw in r.content:
            rec = json.loads(raw)
            if rec["type"] == "tokens":
                toks += rec["token_ids"]
            elif rec["type"] == "final":
                final = rec
            else:
                raise RuntimeError(f"{url}: {rec}")
    return toks, final


def kv_bytes_per_token(ckpt: str, dtype_bytes: int) -> int:
    c = json.load(open(os.path.join(ckpt, "config.json")))
    d = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * d * dtype_bytes


def copy_bandwidth(nbytes: int, device: str) -> float:
    """Bytes/s of one device-to-device copy of `nbytes` (median of 20 after warm-up)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ts = []
    for i in range(25):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dst.copy_(src)
            b.record()
            b.synchronize()
            ms = a.elapsed_time(b)
        else:
            t = time.perf_counter()
            dst.copy_(src)
            ms = (time.perf_counter() - t) * 1000
        if i >= 5:
            ts.append(ms)
    return nbytes / (statistics.median(ts) / 1000)


async def run(args, ckpt: str, logdir: str) -> dict:
    procs = []
    urls = {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4"),
           "PYTHONPATH": os.pathsep.join(p for p in (os.path.join(ROOT, "gpu-backend"), os.environ.get("PYTHONPATH")) if p)}
    try:
        for role in ("prefill", "decode"):
            port = free_port()
            urls[role] = f"http://127.0.0.1:{port}"
            log = open(os.path.join(logdir, f"pod-{role}.log"), "w")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edgeserve_pod.server.cli", "--model", ckpt, "--device", args.device,
                 "--model-id", MODEL_ID, "--pod-id", role, "--role", role, "--port", str(port),
                 "--kv-cache-blocks", str(args.kv_blocks), "--max-model-len", str(args.max_model_len), "--log-level", "INFO"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True))
        for u in urls.values():
            await wait_ok(u, 600)
        rng = random.Random(7)
        vocab = json.load(open(os.path.join(ckpt, "config.json")))["vocab_size"]
        out: dict = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
            # warm-up: one request on each pod (first-call compilation, allocator growth)
            for role, u in urls.items():
                await generate(s, u, f"warm-{role}", [rng.randrange(3, vocab) for _ in range(64)], 4)
            for transport in args.transports:
                rows = []
                for i in range(args.n + 1):  # the first transfer of each transport is a warm-up
                    prompt = [rng.randrange(3, vocab) for _ in range(args.prompt_tokens)]
                    rid = f"{transport}-{i}"
                    want, _ = await generate(s, urls["prefill"], f"ref-{rid}", prompt, args.max_tokens)
                    tid = f"kv-{rid}"
                    dec = asyncio.create_task(generate(s, urls["decode"], rid, prompt, args.max_tokens,
                                                       {"role": "receive", "transfer_id": tid, "transport": transport}))
                    await asyncio.sleep(0.05)
                    _, sent = await generate(s, urls["prefill"], rid, prompt, args.max_tokens,
                                             {"role": "send", "transfer_id": tid, "peer_url": urls["decode"], "transport": transport})
                    got, final = await dec
                    row = {"equal": got == want, "send_ms": sent["timing"]["kv_transfer_ms"],
                           "receive_ms": final["timing"].get("kv_transfer_ms"), "cached_tokens": final["usage"]["cached_tokens"]}
                    print(transport, i, row, flush=True)
                    if i > 0:
                        rows.append(row)
                out[transport] = rows
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--shape", default=None, help="random_checkpoint shape (default: llama-3.2-1b on cuda, tiny on cpu)")
    ap.add_argument("--prompt-tokens", type=int, default=3000)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--kv-blocks", type=int, default=2048)
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--transports", default=None, help="comma list (default: tcp,cuda_ipc on cuda, tcp on cpu)")
    ap.add_argument("--commit", default=None)
    args = ap.parse_args()
    import torch

    from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the TCP-only dry run", file=sys.stderr)
        return 2
    args.transports = (args.transports or ("tcp,cuda_ipc" if args.device == "cuda" else "tcp")).split(",")
    shape = args.shape or ("llama-3.2-1b" if args.device == "cuda" else "tiny")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    work = tempfile.mkdtemp(prefix="kv-ipc-")
    t0 = time.time()
    ckpt = write_random_checkpoint(shape, os.path.join(work, MODEL_ID), seed=0, dtype=dtype, device=args.device)
    print(f"checkpoint {shape} written in {time.time() - t0:.1f}s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    res = asyncio.run(run(args, ckpt, args.out))

    per_tok = kv_bytes_per_token(ckpt, torch.empty(0, dtype=dtype).element_size())
    blocks = (args.prompt_tokens - 1) // 16
    nbytes = blocks * 16 * per_tok
    bw = copy_bandwidth(nbytes, args.device)
    limit_ms = nbytes / bw * 1000
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cond = f"shape={shape},prompt={args.prompt_tokens},kv_bytes={nbytes},n={args.n}"
    med = {t: statistics.median(r["send_ms"] for r in rows) for t, rows in res.items() if rows}
    metrics = []
    for t, rows in res.items():
        m = {"name": f"kv_transfer_ms[{t},{cond}]", "value": round(med[t], 3), "unit": "ms", "better": "lower",
             "limit": {"value": round(limit_ms, 4), "how": f"{nbytes} KV bytes / device copy bandwidth {bw / 1e9:.0f} GB/s measured in this run"}}
        if t != "tcp" and "tcp" in med:
            m["peer"] = {"name": "tcp transport (same run, same pods)", "value": round(med["tcp"], 3)}
        metrics.append(m)
    result = {
        "topic": "slo-routing", "device": device, "commit": commit,
        "command": "python bench/kv_transfer_ipc.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
        "conditions": {"greedy_equal": {t: [r["equal"] for r in rows] for t, rows in res.items()},
                       "receive_side_ms": {t: [r["receive_ms"] for r in rows] for t, rows in res.items()},
                       "cached_tokens": {t: [r["cached_tokens"] for r in rows] for t, rows in res.items()},
                       "send_ms": {t: [r["send_ms"] for r in rows] for t, rows in res.items()},
                       "note": "two pod processes on one device; send_ms = prefill pod's gather + encode/share + PUT until the decode pod holds the blocks"},
        "metrics": metrics,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    path = os.path.join(args.out, f"{time.strftime('%Y-%m-%d')}-{slug}-kv-transfer.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["metrics"], indent=1))
    print("greedy equal:", result["conditions"]["greedy_equal"])
    print("wrote", path)
    ok = all(r["equal"] for rows in res.values() for r in rows) and all(res.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
