"""Pod server overhead on CPU: what the HTTP/NDJSON front end costs over calling the engine directly.

    .venv/bin/python bench/pod_server.py [--runs 5] [--threads 1] [--out bench/results/pod-server]

Same run, same workload (64 concurrent greedy requests, distinct 32-token prompts, 64 output
tokens each, ignore_eos), each measured --runs times, median reported:
  1. the real engine on the tiny random Llama, stepped directly in a loop on a thread of its own,
     as the server runs it (the peer, and the bound: a front end cannot stream faster than the
     engine it wraps);
  2. the same engine behind the pod server, in a process of its own (real aiohttp on 127.0.0.1),
     driven by 64 streaming clients in this process;
  3. can the server keep up with a GPU? A scripted engine that sleeps 4 ms per step (GIL
     released, as in a CUDA sync) and returns one token per request per step, behind the same
     server; its peer is that engine stepped directly; its limit 64 tokens / 4 ms.
torch runs --threads intra-op threads in both the peer and the server process.
Writes bench/results/pod-server/<date>-<cpu-slug>.json (BENCH.md format).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "gpu-backend"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

import torch  # noqa: E402

from edgeserve_pod.config import EngineConfig  # noqa: E402
from edgeserve_pod.engine.engine import LLMEngine  # noqa: E402
from edgeserve_pod.engine.outputs import EngineStats, StepOutput  # noqa: E402
from edgeserve_pod.engine.sequence import SamplingParams  # noqa: E402
from edgeserve_pod.server.app import create_app  # noqa: E402
from edgeserve_pod.server.config import ServerConfig  # noqa: E402
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint  # noqa: E402

STREAMS, PROMPT, OUT = 64, 32, 64
PACED_OUT = 256
STEP_S = 0.004  # 64 tokens per 4 ms = 16,000 tok/s, like a 1B model at batch 64 on an H100


class PacedEngine:
    """Engine API, no model: every step sleeps STEP_S (the GIL released, as while a GPU step runs)
    and gives each request its next token. Isolates the server: can it stream what such an engine
    makes, 64 x one token every STEP_S?"""

    model_id, block_size, max_model_len, eos_token_ids = "tiny", 16, 4096, [2]

    def __init__(self):
        self.reqs: dict[str, list] = {}

    def add_request(self, rid, prompt, params, slo=None, attention=None):
        self.reqs[rid] = [len(prompt), params.max_tokens, 0]

    def abort_request(self, rid):
        return self.reqs.pop(rid, None) is not None

    def has_unfinished(self):
        return bool(self.reqs)

    def step(self):
        time.sleep(STEP_S)
        outs = []
        for rid, r in list(self.reqs.items()):
            r[2] += 1
            done = r[2] >= r[1]
            if done:
                del self.reqs[rid]
            outs.append(StepOutput(rid, [r[2] % 200 + 3], done, "length" if done else None, r[0], 0, r[2]))
        return outs

    def stats(self):
        return EngineStats(len(self.reqs), 0, 100, 100, 0.0, 0, 0, 0)

    def drain_kv_events(self):
        return []


def prompts(run: int = 0):
    """Distinct per request and per run, so the prefix cache never serves a later run."""
    return [[(7 * i + 13 * run + j * (run + 2)) % 250 + 3 for j in range(PROMPT)] for i in range(STREAMS)]


def direct(engine_factory, out_tokens: int, run: int = 0) -> float:
    """Output tok/s of the engine stepped in a plain loop, on its own thread like the server's
    engine loop (on a busy machine torch on the main thread measured up to 30x slower here)."""
    box: list = []
    th = threading.Thread(target=lambda: box.append(_direct(engine_factory, out_tokens, run)))
    th.start()
    th.join()
    return box[0]


def _direct(engine_factory, out_tokens: int, run: int = 0) -> float:
    eng = engine_factory()
    for i, p in enumerate(prompts(run)):
        eng.add_request(f"d{i}", p, SamplingParams(max_tokens=out_tokens, ignore_eos=True))
    t0, n = time.perf_counter(), 0
    while eng.has_unfinished():
        n += sum(len(o.new_token_ids) for o in eng.step())
    assert n == STREAMS * out_tokens, n
    return n / (time.perf_counter() - t0)


def start_server(kind: str, model: str, threads: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind, "--model", model,
                             "--threads", str(threads)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("edgeserve-pod: listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[-1]


async def served(url: str, out_tokens: int, run: int) -> tuple[float, float]:
    """(output tok/s, median client TTFT ms) with 64 concurrent streaming clients over TCP."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=STREAMS + 8)) as s:
        for _ in range(1200):  # wait for /health 200 (engine built)
            async with s.get(url + "/health") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        ttfts: list[float] = []

        async def one(i, p):
            body = {"request_id": f"s{run}-{i}", "model": "tiny", "prompt_token_ids": p, "max_tokens": out_tokens,
                    "ignore_eos": True}
            t = time.perf_counter()
            n, first = 0, None
            async with s.post(url + "/v1/generate", json=body) as r:
                async for line in r.content:
                    rec = json.loads(line)
                    if rec["type"] == "tokens":
                        first = first or time.perf_counter()
                        n += len(rec["token_ids"])
                    elif rec["type"] != "final":
                        raise RuntimeError(rec)
            ttfts.append((first - t) * 1000)
            return n

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts(run))))
        dt = time.perf_counter() - t0
    assert sum(counts) == STREAMS * out_tokens, counts
    return sum(counts) / dt, statistics.median(ttfts)


def serve(kind: str, model: str) -> None:
    """--serve: run one pod app (real or paced engine) until SIGTERM."""
    factory = PacedEngine if kind == "paced" else real_factory(model)

    async def run():
        app = create_app(ServerConfig(pod_id="bench", port=0), factory, "tiny", 16)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"edgeserve-pod: listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


def real_factory(model: str):
    def build():
        return LLMEngine(EngineConfig(model=model, device="cpu", model_id="tiny", kv_cache_blocks=1024,
                                      max_num_seqs=STREAMS, max_num_batched_tokens=2048, max_model_len=512))

    return build


from bench_common import cpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (peer and server alike)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "pod-server"))
    ap.add_argument("--serve", choices=("real", "paced"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.serve:
        serve(a.serve, a.model)
        return

    model = write_random_checkpoint("tiny", tempfile.mkdtemp(prefix="pod-server-bench-"))
    real = real_factory(model)
    rows = {"real_direct": [], "real_served": [], "real_ttft": [], "paced_direct": [], "paced_served": []}
    servers = {k: start_server(k, model, a.threads) for k in ("real", "paced")}
    try:
        direct(real, 4, run=-1)  # warm-up: first forward passes
        asyncio.run(served(servers["real"][1], 4, run=-1))
        for r in range(a.runs):
            rows["real_direct"].append(direct(real, OUT, r))
            tok_s, ttft = asyncio.run(served(servers["real"][1], OUT, r))
            rows["real_served"].append(tok_s)
            rows["real_ttft"].append(ttft)
            rows["paced_direct"].append(direct(PacedEngine, PACED_OUT, r))
            rows["paced_served"].append(asyncio.run(served(servers["paced"][1], PACED_OUT, r))[0])
            print(f"run {r}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in rows.items()), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    med = {k: statistics.median(v) for k, v in rows.items()}

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    device = cpu_name()
    load = os.getloadavg()[0]
    cond = f"streams={STREAMS},prompt={PROMPT},out={OUT},model=tiny-random-llama,cpu,threads={a.threads}"
    doc = {
        "topic": "pod-server", "device": device, "commit": commit,
        "command": "python bench/pod_server.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "metrics": [
            {"name": f"decode_tok_s[served,{cond}]", "value": round(med["real_served"], 1), "unit": "tok/s", "better": "higher",
             "peer": {"name": "the same engine stepped directly, no server", "value": round(med["real_direct"], 1)},
             "limit": {"value": round(med["real_direct"], 1), "how": "a front end cannot stream faster than its engine (the peer, measured in this run)"}},
            {"name": f"ttft_ms[served,client,{cond}]", "value": round(med["real_ttft"], 1), "unit": "ms", "better": "lower"},
            {"name": f"decode_tok_s[served,streams={STREAMS},out={PACED_OUT},engine=paced-4ms-step,cpu]",
             "value": round(med["paced_served"], 1), "unit": "tok/s", "better": "higher",
             "peer": {"name": "the paced engine stepped directly, no server", "value": round(med["paced_direct"], 1)},
             "limit": {"value": round(STREAMS / STEP_S, 1), "how": f"{STREAMS} tokens per {STEP_S * 1000:g} ms step"}},
        ],
        "notes": [
            f"median of {a.runs} runs; 1-minute load average at the end {load:.1f} on {os.cpu_count()} CPUs "
            "(other work was running on this machine: absolute figures are low, the served/direct ratio is the point)",
            "server in its own process, clients (aiohttp, 64 connections) in the bench process, both on this machine",
            "one token per tokens record unless records queued up while the client was being written to",
        ],
    }
    os.makedirs(a.out, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")[:40]
    path = os.path.join(a.out, f"{doc['date']}-{slug}.json")
    if os.path.exists(path):
        path = path[:-5] + time.strftime("-%H%M%S", time.gmtime()) + ".json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(doc, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
