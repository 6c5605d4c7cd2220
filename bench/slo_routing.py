"""Trace-driven SLO-routing benchmark through the real edge (wrangler dev) to 3 real CPU pods.

    .venv/bin/python bench/slo_routing.py            # all policies, one run each, same trace
    .venv/bin/python bench/slo_routing.py --policies round-robin,prefix-slo --requests 60
    .venv/bin/python bench/slo_routing.py --repeats 3 --time-scale 1.15   # medians over 3 interleaved runs

For each policy it starts a fresh `wrangler dev` (its own state dir, ROUTING_POLICY set) and
three fresh pods (random-weight Llama-shaped model served under the edge's model id, so the
edge's tokenizer applies), replays the scaled Mooncake window (slo_routing_trace.py) with its
arrival times through POST /v1/completions (token-id prompts, streamed, usage included), then
stops everything, so that every policy starts from cold caches. Per request: TTFT and end time
at the client, completion and cached tokens from the usage chunk, the route header.

Writes bench/results/slo-routing/<date>-<cpu-slug>.json (../shared/design/BENCH.md): SLO
attainment, goodput, TTFT p50/p99 per class, cache-hit tokens per policy; round-robin is the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp

sys.path.insert(0, os.path.dirname(__file__))
import slo_routing_trace as trace  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ID = "smollm2-135m-instruct"
API_KEY = "sk-edgeserve-local"  # wrangler.toml's local-dev key
POD_SECRET = "edgeserve-dev-pod-secret"
TOKENIZER = os.path.join(ROOT, ".cache/tokenizers", MODEL_ID + ".json")
TRACE = "/work/shared/traces/mooncake_synthetic_trace.jsonl"
# A Llama shape small enough for 1-thread CPU pods, with the edge model's vocabulary size.
SHAPE = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=256, intermediate_size=768,
             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=49152,
             rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=8192, tie_word_embeddings=True,
             bos_token_id=1, eos_token_id=2)


@dataclass
class Slo:
    ttft_ms: float
    tpot_ms: float
    deadline_base_ms: float
    deadline_per_token_ms: float
    batch_deadline_ms: float

    def header(self, cls: str, max_tokens: int) -> str:
        if cls == "interactive":
            return f"class=interactive; ttft_ms={self.ttft_ms}; tpot_ms={self.tpot_ms}"
        if cls == "deadline":
            return f"class=deadline; deadline_ms={self.deadline_ms(max_tokens)}"
        return f"class=batch; deadline_ms={self.batch_deadline_ms}"

    def deadline_ms(self, max_tokens: int) -> float:
        return self.deadline_base_ms + self.deadline_per_token_ms * max_tokens

    def met(self, cls: str, r: "Result") -> bool:
        if not r.ok:
            return False
        if cls == "interactive":
            tpot = (r.total_ms - r.ttft_ms) / max(1, r.completion_tokens - 1)
            return r.ttft_ms <= self.ttft_ms and (r.completion_tokens <= 1 or tpot <= self.tpot_ms)
        if cls == "deadline":
            return r.total_ms <= self.deadline_ms(r.max_tokens)
        return r.total_ms <= self.batch_deadline_ms


@dataclass
class Result:
    index: int
    cls: str
    max_tokens: int
    prompt_tokens: int
    ok: bool = False
    ttft_ms: float = float("nan")
    total_ms: float = float("nan")
    completion_tokens: int = 0
    cached_tokens: int = 0
    route: str = ""
    error: str = ""


@dataclass
class Procs:
    items: list = field(default_factory=list)

    def start(self, args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        f = open(log, "w")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        self.items.append(p)
        return p

    def stop(self) -> None:
        for p in self.items:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.items:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.items.clear()


def make_checkpoint(path: str) -> str:
    from edgeserve_pod.tools import random_checkpoint as rc

    out = os.path.join(path, MODEL_ID)
    if not os.path.exists(os.path.join(out, "config.json")):
        rc.SHAPES["bench-small"] = SHAPE
        import torch

        rc.write_random_checkpoint("bench-small", out, seed=0, dtype=torch.float32)
    return out


def free_port() -> int:
    """A port nobody listens on now (a stopped edge's workerd can hold its old port for a while)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_http(url: str, pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if await pred(r):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what} ({url})")


async def one(session: aiohttp.ClientSession, edge: str, req: trace.TraceRequest, slo: Slo, t0: float) -> Result:
    res = Result(req.index, req.cls, req.max_tokens, len(req.prompt))
    await asyncio.sleep(max(0.0, t0 + req.arrival_s - time.monotonic()))
    body = {"model": MODEL_ID, "prompt": req.prompt, "max_tokens": req.max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    headers = {"authorization": f"Bearer {API_KEY}", "x-edgeserve-slo": slo.header(req.cls, req.max_tokens)}
    start = time.monotonic()
    try:
        async with session.post(f"{edge}/v1/completions", json=body, headers=headers) as r:
            res.route = r.headers.get("x-edgeserve-route", "")
            if r.status != 200:
                res.error = f"{r.status}: {(await r.text())[:200]}"
                return res
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("choices") and res.ttft_ms != res.ttft_ms:  # first output chunk (NaN check)
                    res.ttft_ms = (time.monotonic() - start) * 1000.0
                if chunk.get("usage"):
                    u = chunk["usage"]
                    res.completion_tokens = u["completion_tokens"]
                    res.cached_tokens = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        res.total_ms = (time.monotonic() - start) * 1000.0
        res.ok = res.ttft_ms == res.ttft_ms
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


async def run_policy(policy: str, pod_sched: str, reqs: list[trace.TraceRequest], slo: Slo, ckpt: str,
                     logdir: str, pods: int) -> tuple[list[Result], float]:
    procs = Procs()
    port = free_port()
    state = tempfile.mkdtemp(prefix="slo-bench-state-")
    edge = f"http://127.0.0.1:{port}"
    wr = [os.path.join(ROOT, "node_modules/.bin/wrangler")]
    try:
        subprocess.run(wr + ["r2", "object", "put", f"edgeserve-models/tokenizers/{MODEL_ID}.json", "--file", TOKENIZER,
                             "--local", "--persist-to", state], cwd=ROOT, check=True, capture_output=True)
        procs.start(wr + ["dev", "--ip", "127.0.0.1", "--port", str(port), "--persist-to", state,
                          "--var", f"ROUTING_POLICY:{policy}", "--show-interactive-dev-session=false"],
                    os.path.join(logdir, f"edge-{policy}-{pod_sched}.log"))
        await wait_http(f"{edge}/health", lambda r: asyncio.sleep(0, r.status == 200), 120, "the edge")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        py = os.path.join(ROOT, ".venv/bin/python")
        def start_pod(i: int, attempt: int) -> subprocess.Popen:
            return procs.start([py, "-m", "edgeserve_pod.server.cli", "--model", ckpt, "--model-id", MODEL_ID,
                                "--pod-id", f"pod-{i}", "--port", str(free_port()), "--edge-url", edge, "--pod-secret", POD_SECRET,
                                "--heartbeat-s", "1", "--kv-cache-blocks", "1024", "--max-num-batched-tokens", "512",
                                "--max-num-seqs", "16", "--max-model-len", "8192", "--scheduling-policy", pod_sched,
                                "--log-level", "WARNING"],
                               os.path.join(logdir, f"pod{i}-{policy}-{pod_sched}{'-retry%d' % attempt if attempt else ''}.log"), env)

        pod_procs = [start_pod(i, 0) for i in range(pods)]
        live = 0
        for attempt in range(1, 4):
            # A pod whose free port was taken in between (a busy shared host) exits at once: start it again.
            async def all_live(r):
                nonlocal live
                body = await r.json()
                live = len(body["models"][MODEL_ID]["live_pods"])
                return live == pods or any(p.poll() is not None for p in pod_procs)

            await wait_http(f"{edge}/health", all_live, 180, f"{pods} live pods")
            dead = [i for i, p in enumerate(pod_procs) if p.poll() is not None]
            if not dead and live == pods:
                break
            for i in dead:
                print(f"  pod-{i} exited at start (see its log); starting it again", flush=True)
                pod_procs[i] = start_pod(i, attempt)
        else:
            raise RuntimeError(f"pods of the {policy} run did not all start; see the logs in {logdir}")
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
            t0 = time.monotonic() + 0.5
            results = await asyncio.gather(*(one(s, edge, r, slo, t0) for r in reqs))
            span = max(t0 + r.arrival_s + (x.total_ms / 1000 if x.ok else 0) for r, x in zip(reqs, results)) - t0
        return results, span
    finally:
        procs.stop()
        shutil.rmtree(state, ignore_errors=True)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def summarize(results: list[Result], slo: Slo, span: float) -> dict:
    met = [r for r in results if slo.met(r.cls, r)]
    out = {
        "requests": len(results), "ok": sum(r.ok for r in results), "met": len(met),
        "slo_attainment": len(met) / len(results),
        "goodput_tok_s": sum(r.prompt_tokens + r.completion_tokens for r in met) / span,
        "goodput_req_s": len(met) / span,
        "cache_hit_tokens": sum(r.cached_tokens for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "span_s": span, "errors": [r.error for r in results if r.error][:5], "per_class": {},
    }
    for cls in ("interactive", "deadline", "batch"):
        rs = [r for r in results if r.cls == cls]
        ttfts = [r.ttft_ms for r in rs if r.ok]
        out["per_class"][cls] = {"n": len(rs), "slo_attainment": sum(slo.met(cls, r) for r in rs) / max(1, len(rs)),
                                 "ttft_p50_ms": pct(ttfts, 50), "ttft_p99_ms": pct(ttfts, 99)}
    return out


from bench_common import cpu_name  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default="round-robin,least-loaded,prefix-aware,prefix-slo")
    ap.add_argument("--pod-sched", default="prefix-slo=slo", help="policy=pod scheduler overrides; others use fcfs")
    ap.add_argument("--start", type=int, default=3793, help="first trace request of the window")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--len-scale", type=int, default=32, help="lengths and the 512-token block divided by this")
    ap.add_argument("--time-scale", type=float, default=0.7, help="arrival times divided by this")
    ap.add_argument("--pods", type=int, default=3)
    ap.add_argument("--ttft-ms", type=float, default=1500)
    ap.add_argument("--tpot-ms", type=float, default=150)
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the policy list this many times, interleaved; the results add per-policy medians")
    ap.add_argument("--out", default=None)
    ap.add_argument("--note", default="", help="free text for the results file (host state, what changed)")
    args = ap.parse_args()
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    slo = Slo(ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, deadline_base_ms=3000, deadline_per_token_ms=150,
              batch_deadline_ms=60_000)
    reqs = trace.load(TRACE, args.start, args.requests, args.len_scale, args.time_scale)
    overrides = dict(kv.split("=", 1) for kv in args.pod_sched.split(",") if kv)
    workdir = tempfile.mkdtemp(prefix="slo-bench-")
    ckpt = make_checkpoint(workdir)
    runs = {}
    for i, pol in enumerate(args.policies.split(",") * args.repeats):
        name, _, sched_override = pol.partition("+")
        sched = sched_override or overrides.get(name, "fcfs")
        label = name if not sched_override else pol
        if label in runs:  # a repeat in the same invocation (interleaved runs against background load)
            label += f"#{sum(k.split('#')[0] == label for k in runs) + 1}"
        print(f"[{time.strftime('%H:%M:%S')}] {label}: pods schedule with {sched}", flush=True)
        load_before = os.getloadavg()
        results, span = asyncio.run(run_policy(name, sched, reqs, slo, ckpt, workdir, args.pods))
        # The host is shared: its load during each run goes with the run (uptime's 1/5/15-min averages).
        runs[label] = {"pod_scheduler": sched, **summarize(results, slo, span),
                       "routes_sample": [r.route for r in results[:3]],
                       "route_modes": route_modes(name, results),
                       "load_avg_before": [round(x, 2) for x in load_before],
                       "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
        # Per-request rows for diagnosis (why a class misses), next to the logs, not in the results file.
        with open(os.path.join(workdir, f"requests-{label}.json"), "w") as f:
            json.dump([{**r.__dict__, "met": slo.met(r.cls, r), "arrival_s": q.arrival_s} for r, q in zip(results, reqs)], f)
        s = runs[label]
        print(f"  attainment {s['slo_attainment']:.3f} goodput {s['goodput_tok_s']:.1f} tok/s "
              f"cache-hit {s['cache_hit_tokens']} / {s['prompt_tokens']} span {span:.1f}s errors {len(s['errors'])}", flush=True)
    args.note = {"text": args.note, "uptime_start": uptime_start,
                 "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    write_results(args, slo, reqs, runs, workdir)
    return 0


def route_modes(policy: str, results: list[Result]) -> dict:
    """How often each routing case (the word after the policy in x-edgeserve-route) came up."""
    out: dict[str, int] = {}
    for r in results:
        words = r.route.split(" ")
        key = "error" if not r.route else (words[2] if policy == "prefix-slo" and len(words) > 2 else words[1] if len(words) > 1 else "")
        if key.startswith("pick="):
            key = "pick"
        out[key] = out.get(key, 0) + 1
    return out


def policy_medians(runs: dict) -> dict:
    """Per policy (label without its #k repeat suffix): medians over its runs, and the ratios to
    round-robin paired by repeat (run k of a policy against run k of round-robin)."""
    groups: dict[str, list[dict]] = {}
    for label, s in runs.items():
        groups.setdefault(label.split("#")[0], []).append(s)
    rr = groups.get("round-robin", [])
    out = {}
    for name, ss in groups.items():
        m = {"runs": len(ss)}
        for k in ("goodput_tok_s", "slo_attainment", "cache_hit_tokens"):
            m[k] = statistics.median(x[k] for x in ss)
        if rr and name != "round-robin":
            pairs = list(zip(ss, rr))
            m["goodput_ratio_to_rr_paired"] = [round(a["goodput_tok_s"] / b["goodput_tok_s"], 3) for a, b in pairs]
            m["cache_hit_ratio_to_rr_paired"] = [round(a["cache_hit_tokens"] / max(1, b["cache_hit_tokens"]), 3) for a, b in pairs]
            m["goodput_ratio_to_rr_median"] = round(m["goodput_tok_s"] / statistics.median(x["goodput_tok_s"] for x in rr), 3)
            m["cache_hit_ratio_to_rr_median"] = round(m["cache_hit_tokens"] / max(1, statistics.median(x["cache_hit_tokens"] for x in rr)), 3)
        out[name] = m
    return out


def write_results(args, slo: Slo, reqs, runs: dict, workdir: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    device = cpu_name()
    date = time.strftime("%Y-%m-%d")
    rr = runs.get("round-robin")  # the first round-robin run is the peer
    metrics = []
    for label, s in runs.items():
        cond = f"policy={label},pod_sched={s['pod_scheduler']},pods={args.pods},len_scale={args.len_scale},time_scale={args.time_scale}"
        peer = (lambda k: {"name": "round-robin (same run)", "value": rr[k]}) if rr and label != "round-robin" else (lambda k: None)
        # Physical limit: every prompt token computed once at most (perfect cache) bounds cache hits;
        # goodput cannot exceed all tokens offered over the span.
        offered = sum(len(r.prompt) + r.max_tokens for r in reqs) / s["span_s"]
        unique = len({tuple(r.prompt[:k * 16]) for r in reqs for k in range(1, len(r.prompt) // 16 + 1)})
        hit_limit = s["prompt_tokens"] - unique * 16
        m = [
            {"name": f"goodput_tok_s[{cond}]", "value": round(s["goodput_tok_s"], 2), "unit": "tok/s", "better": "higher",
             "peer": peer("goodput_tok_s"), "limit": {"value": round(offered, 2), "how": "all tokens offered (prompt + max_tokens) / span"},
             "target": {"value": round(1.4 * rr["goodput_tok_s"], 2), "source": "issue 5: prefix+SLO >= 1.4x round-robin goodput"} if rr and label == "prefix-slo" else None},
            {"name": f"slo_attainment[{cond}]", "value": round(s["slo_attainment"], 4), "unit": "fraction", "better": "higher",
             "peer": peer("slo_attainment"), "limit": {"value": 1.0, "how": "every request meets its SLO"}},
            {"name": f"cache_hit_tokens[{cond}]", "value": s["cache_hit_tokens"], "unit": "tokens", "better": "higher",
             "peer": peer("cache_hit_tokens"),
             "limit": {"value": hit_limit, "how": "prompt tokens minus the distinct 16-token-block prefixes (perfect global cache)"},
             "target": {"value": 2 * rr["cache_hit_tokens"], "source": "issue 5: prefix+SLO >= 2x round-robin cache-hit tokens"} if rr and label == "prefix-slo" else None},
        ]
        for cls, c in s["per_class"].items():
            for q in ("p50", "p99"):
                m.append({"name": f"ttft_ms[{cond},class={cls},{q}]", "value": round(c[f"ttft_{q}_ms"], 1), "unit": "ms", "better": "lower",
                          "peer": {"name": "round-robin (same run)", "value": round(rr["per_class"][cls][f"ttft_{q}_ms"], 1)} if rr and label != "round-robin" else None})
        for x in m:
            for k in ("peer", "target"):
                if x.get(k) is None:
                    x.pop(k, None)
        metrics += m
    medians = policy_medians(runs)
    if medians and any(m["runs"] > 1 for m in medians.values()):
        mr = medians.get("round-robin")
        for name, m in medians.items():
            cond = f"median of {m['runs']} runs,policy={name},pods={args.pods},len_scale={args.len_scale},time_scale={args.time_scale}"
            peer = (lambda k: {"name": f"round-robin, median of {mr['runs']} runs interleaved in the same invocation", "value": round(mr[k], 2)}) \
                if mr and name != "round-robin" else (lambda k: None)
            mm = [
                {"name": f"goodput_tok_s[{cond}]", "value": round(m["goodput_tok_s"], 2), "unit": "tok/s", "better": "higher",
                 "peer": peer("goodput_tok_s"),
                 "target": {"value": round(1.4 * mr["goodput_tok_s"], 2), "source": "issue 5: prefix+SLO >= 1.4x round-robin goodput"} if mr and name == "prefix-slo" else None},
                {"name": f"slo_attainment[{cond}]", "value": round(m["slo_attainment"], 4), "unit": "fraction", "better": "higher",
                 "peer": peer("slo_attainment"), "limit": {"value": 1.0, "how": "every request meets its SLO"}},
                {"name": f"cache_hit_tokens[{cond}]", "value": m["cache_hit_tokens"], "unit": "tokens", "better": "higher",
                 "peer": peer("cache_hit_tokens"),
                 "target": {"value": 2 * mr["cache_hit_tokens"], "source": "issue 5: prefix+SLO >= 2x round-robin cache-hit tokens"} if mr and name == "prefix-slo" else None},
            ]
            for x in mm:
                for k in ("peer", "target"):
                    if x.get(k) is None:
                        x.pop(k, None)
            metrics += mm
    out = {
        "topic": "slo-routing", "device": device, "commit": commit,
        "command": "python bench/slo_routing.py " + " ".join(sys.argv[1:]), "date": date,
        "conditions": {"trace": "mooncake_synthetic_trace.jsonl", "window": [args.start, args.start + args.requests],
                       "len_scale": args.len_scale, "time_scale": args.time_scale, "pods": args.pods,
                       "pod_model": SHAPE, "pod_threads": 1, "host_cpus": os.cpu_count(),
                       "classes": {c: sum(r.cls == c for r in reqs) for c in ("interactive", "deadline", "batch")},
                       "slo": slo.__dict__, "goodput": "prompt+completion tokens of requests that met their SLO, per second of span"},
        "note": args.note, "runs": runs, "medians": medians, "metrics": metrics,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    path = args.out or os.path.join(ROOT, "bench/results/slo-routing", f"{date}-{slug}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):  # never overwrite an earlier run
        path = path.replace(".json", time.strftime("-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path, "logs in", workdir)


if __name__ == "__main__":
    sys.exit(main())
