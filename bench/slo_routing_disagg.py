"""Disaggregated prefill/decode through the real edge: greedy output and timing vs colocated.

    .venv/bin/python bench/slo_routing_disagg.py

Run 1 (colocated): wrangler dev + one pod (role both). Run 2 (disaggregated): wrangler dev + a
prefill pod + a decode pod; the prefix-slo router plans prefill -> decode for prompts with at
least 2048 uncached tokens, and the pods move the KV over TCP (PUT /v1/kv_transfer/{id}). The same
long prompts go through /v1/completions (greedy) in both runs; the texts must be equal. The KV
transfer time comes from the prefill pod's log line. Writes a BENCH.md result file.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(__file__))
from slo_routing import (API_KEY, MODEL_ID, POD_SECRET, ROOT, TOKENIZER, Procs, cpu_name, free_port,  # noqa: E402
                         make_checkpoint, wait_http)

PROMPT_TOKENS = 3000
N = 5


async def complete(s: aiohttp.ClientSession, edge: str, prompt: list[int]) -> tuple[str, float, str]:
    body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": 16, "temperature": 0, "stream": True}
    t = time.monotonic()
    ttft, text = None, ""
    async with s.post(f"{edge}/v1/completions", json=body, headers={"authorization": f"Bearer {API_KEY}"}) as r:
        route = r.headers.get("x-edgeserve-route", "")
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                ch = json.loads(line[5:])
                if ch.get("choices"):
                    ttft = ttft or (time.monotonic() - t) * 1000
                    text += ch["choices"][0].get("text", "")
    return text, ttft, route


async def run(roles: list[str], prompts: list[list[int]], ckpt: str, logdir: str, tag: str) -> tuple[list, list[str]]:
    procs = Procs()
    state = tempfile.mkdtemp(prefix="disagg-state-")
    port = free_port()
    edge = f"http://127.0.0.1:{port}"
    wr = [os.path.join(ROOT, "node_modules/.bin/wrangler")]
    logs = []
    try:
        subprocess.run(wr + ["r2", "object", "put", f"edgeserve-models/tokenizers/{MODEL_ID}.json", "--file", TOKENIZER,
                             "--local", "--persist-to", state], cwd=ROOT, check=True, capture_output=True)
        procs.start(wr + ["dev", "--ip", "127.0.0.1", "--port", str(port), "--persist-to", state,
                          "--var", "ROUTING_POLICY:prefix-slo", "--show-interactive-dev-session=false"],
                    os.path.join(logdir, f"edge-{tag}.log"))
        await wait_http(f"{edge}/health", lambda r: asyncio.sleep(0, r.status == 200), 120, "the edge")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for i, role in enumerate(roles):
            log = os.path.join(logdir, f"pod{i}-{tag}.log")
            logs.append(log)
            procs.start([os.path.join(ROOT, ".venv/bin/python"), "-m", "edgeserve_pod.server.cli", "--model", ckpt,
                         "--model-id", MODEL_ID, "--pod-id", f"{tag}-{role}-{i}", "--role", role, "--port", str(free_port()),
                         "--edge-url", edge, "--pod-secret", POD_SECRET, "--heartbeat-s", "1", "--kv-cache-blocks", "2048",
                         "--max-model-len", "8192", "--log-level", "INFO"], log, env)

        async def live(r):
            return len((await r.json())["models"][MODEL_ID]["live_pods"]) == len(roles)

        await wait_http(f"{edge}/health", live, 180, "live pods")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            out = [await complete(s, edge, p) for p in prompts]
        return out, logs
    finally:
        procs.stop()


def main() -> int:
    work = tempfile.mkdtemp(prefix="disagg-bench-")
    ckpt = make_checkpoint(work)
    rng = random.Random(11)
    prompts = [[rng.randrange(3, 49000) for _ in range(PROMPT_TOKENS)] for _ in range(N)]
    colo, _ = asyncio.run(run(["both"], prompts, ckpt, work, "colo"))
    dis, logs = asyncio.run(run(["prefill", "decode"], prompts, ckpt, work, "disagg"))
    same = [a[0] == b[0] for a, b in zip(colo, dis)]
    kv = []
    for log in logs:
        for line in open(log):
            m = re.search(r"KV transfer \S+(?: \(\w+\))?: (\d+) blocks, (\d+) bytes in ([\d.]+) ms", line)
            if m:
                kv.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    print("routes:", dis[0][2])
    print("greedy text equal:", same)
    print("ttft colocated ms:", [round(x[1]) for x in colo], "disaggregated:", [round(x[1]) for x in dis])
    print("kv transfers (blocks, bytes, ms):", kv)
    # Ceiling for moving the bytes once: a memcpy of the same size, measured here.
    import numpy as np

    nbytes = kv[0][1] if kv else 0
    a = np.ones(max(1, nbytes // 4), dtype=np.float32)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        a.copy()
        ts.append((time.perf_counter() - t) * 1000)
    copy_ms = statistics.median(ts)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    device = cpu_name()
    cond = f"prompt={PROMPT_TOKENS},max_tokens=16,n={N}"
    result = {
        "topic": "slo-routing", "device": device, "commit": commit, "command": "python bench/slo_routing_disagg.py",
        "date": time.strftime("%Y-%m-%d"),
        "conditions": {"greedy_text_equal": same, "route_example": dis[0][2], "kv_transfers": kv,
                       "note": "colocated: 1 pod (both); disaggregated: prefill pod -> decode pod; 1 thread per pod"},
        "metrics": [
            {"name": f"ttft_ms[disaggregated,{cond}]", "value": round(statistics.median(x[1] for x in dis), 1), "unit": "ms",
             "better": "lower", "peer": {"name": "colocated (same run)", "value": round(statistics.median(x[1] for x in colo), 1)}},
            {"name": f"kv_transfer_ms[tcp,loopback,{cond}]", "value": round(statistics.median(x[2] for x in kv), 2) if kv else None,
             "unit": "ms", "better": "lower",
             "limit": {"value": round(copy_ms, 3), "how": f"one memcpy of the {nbytes} KV bytes, measured in this run"}},
        ],
    }
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    path = os.path.join(ROOT, "bench/results/slo-routing", f"{time.strftime('%Y-%m-%d')}-{slug}-disagg.json")
    if os.path.exists(path):
        path = path.replace(".json", time.strftime("-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", path)
    return 0 if all(same) and kv else 1


if __name__ == "__main__":
    sys.exit(main())
