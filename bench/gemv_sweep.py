"""bf16 GEMV (gpu-backend/edgeserve_pod/kernels/gemv.py) on the decode shapes of Llama-3.2-1B and
Llama-3.1-8B: a config sweep per (N, K), ours vs cuBLAS (F.linear) vs the unfused chain the engine
runs today, against the copy-bandwidth limit. One call, a few minutes on an H100.

Every shape is timed with the fusion the decoder layer gives it (qkv, gate_up, lm_head: rmsnorm
prologue; o: residual epilogue; down: silu_mul prologue + residual epilogue), at M = 1 (swept)
and M = 4 (the M = 1 winner only). Peers, same inputs, same run:
  - cuBLAS: F.linear(a, W) alone (it does not do the fused work: a lower bound for that path)
  - chain: the engine's unfused kernels: add_rmsnorm / silu_mul (fused_elementwise.py), F.linear,
    + residual.
Limit: bytes moved (W + activation + output + residual) / copy bandwidth measured in this run.

Timing: CUDA graph of R calls over R weight copies (R x weight > 2x L2, so no call finds its W
in L2), median replay time / R. Correctness: every config runs once on fresh inputs into a
NaN-poisoned output and is compared with the float32 chain (gemv_reference); a config with
relative error > 1e-2 (or NaN) cannot win.

    python bench/gemv_sweep.py --out DIR [--commit SHA] [--quick] [--workers N]
Writes DIR/gemv_sweep.json (BENCH.md format), DIR/sweep.json (every config's time and error),
DIR/best_configs.json, and prints the CONFIGS lines for kernels/gemv.py.
`--cpu-smoke` runs the same code on CPU (Triton interpreter, tiny shapes, wall-clock timing):
it checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

if "--cpu-smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))

from bench_common import copies_for, graph_time_us as gpu_graph_time_us, map_in_processes  # noqa: E402

from edgeserve_pod.kernels import gemv as G  # noqa: E402

# (model, role, N, K, prologue, residual)
SHAPES = [
    ("1b", "qkv", 3072, 2048, "rmsnorm", False), ("1b", "o", 2048, 2048, None, True),
    ("1b", "gate_up", 16384, 2048, "rmsnorm", False), ("1b", "down", 2048, 8192, "silu_mul", True),
    ("1b", "lm_head", 128256, 2048, "rmsnorm", False),
    ("8b", "qkv", 6144, 4096, "rmsnorm", False), ("8b", "o", 4096, 4096, None, True),
    ("8b", "gate_up", 28672, 4096, "rmsnorm", False), ("8b", "down", 4096, 14336, "silu_mul", True),
    ("8b", "lm_head", 128256, 4096, "rmsnorm", False),
]
SMOKE_SHAPES = [("tiny", "qkv", 48, 64, "rmsnorm", False), ("tiny", "down", 32, 128, "silu_mul", True)]
EPS = 1e-5
BF = torch.bfloat16


def candidates():
    """~150 configs around the first H100 sweep's winners (BLOCK_K 512-1024, one stage mostly):
    BLOCK_N 2..32, BLOCK_K 256..1024, 2-8 warps, 1 or 3 stages, DEFER, and PREFETCH (the register
    double buffer, one stage only); plus the committed CONFIGS, so they are re-timed in this run."""
    out = []
    for bn in (2, 4, 8, 16, 32):
        for bk in (256, 512, 1024):
            for warps in (2, 4, 8):
                per_thread = bn * bk // (32 * warps)  # W elements a thread holds per tile
                if per_thread < 8 or (warps == 2 and bn * bk > 2048) or (bk == 256 and bn > 4):
                    continue  # < 16 B of W a thread; too few warps; short tiles only for narrow N tiles
                for stages in (1, 3):  # 1: register loads; 3: cp.async through shared memory
                    if stages > 1 and stages * bn * bk * 2 > 160 * 1024:
                        continue
                    for defer in (False, True):
                        if defer and per_thread > 64:  # the deferred fp32 tile: <= 64 registers a thread
                            continue
                        out.append(G._cfg(bn, bk, warps, stages, defer))
                        if stages == 1 and per_thread <= 64:  # two register tiles must fit
                            out.append(G._cfg(bn, bk, warps, stages, defer, prefetch=True))
    seen = {key(c) for c in out}
    out += [c for c in G.CONFIGS.values() if key(c) not in seen and not seen.add(key(c))]
    return out


def key(cfg):
    return json.dumps(cfg, sort_keys=True)


# ---------------------------------------------------------------- timing

def median(xs):
    return statistics.median(xs)


def graph_time_us(fns, replays=15):
    """fns: R zero-arg callables (one per weight copy) -> median replay time / R, in us."""
    if not torch.cuda.is_available():  # --cpu-smoke: wall clock
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            for f in fns:
                f()
            ts.append((time.perf_counter() - t0) * 1e6 / len(fns))
        return median(ts)
    return gpu_graph_time_us(fns, replays)


def copy_bandwidth(dev):
    """Bytes/s of a 1 GiB device copy (read + write), median of 10."""
    n = 2**29 if dev == "cuda" else 2**22
    a = torch.empty(n, dtype=BF, device=dev).normal_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    ts = []
    for _ in range(10):
        if dev == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record(); b.copy_(a); e1.record(); e1.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e-3)
        else:
            t0 = time.perf_counter(); b.copy_(a); ts.append(time.perf_counter() - t0)
    return 2 * n * 2 / median(ts)


# ---------------------------------------------------------------- parallel compile

def _compile_worker(jobs):
    ok = []
    for (prologue, residual, m, cfg) in jobs:
        try:
            n, k = 256, 2048  # every bench shape has N, K, strides % 16 == 0 and K % BLOCK_K == 0
            x = torch.ones(m, 2 * k if prologue == "silu_mul" else k, dtype=BF, device="cuda")
            w = torch.ones(n, k, dtype=BF, device="cuda")
            G.gemv(x, w, prologue=prologue, norm_weight=torch.ones(k, dtype=BF, device="cuda"), eps=EPS,
                   residual=torch.ones(m, n, dtype=BF, device="cuda") if residual else None, config=cfg)
            torch.cuda.synchronize()
            ok.append(True)
        except Exception as e:  # a config that does not fit (registers, shared memory)
            ok.append(repr(e)[:160])
    return ok


def precompile(jobs, workers):
    """Fill Triton's on-disk cache from several processes; per job True or the error.
    jobs: (prologue, residual, M, config); K, N, M > 1 share one binary per job."""
    return map_in_processes(_compile_worker, jobs, workers)


# ---------------------------------------------------------------- one shape

def operands(m, n, k, prologue, residual, dev, gen):
    x = torch.randn(m, 2 * k if prologue == "silu_mul" else k, device=dev, generator=gen).to(BF)
    nw = (1 + 0.1 * torch.randn(k, device=dev, generator=gen)).to(BF) if prologue == "rmsnorm" else None
    res = torch.randn(m, n, device=dev, generator=gen).to(BF) if residual else None
    return x, nw, res


def chain(x, w, prologue, nw, res):
    """The engine's unfused path: its Triton elementwise kernels on CUDA, F.linear, + residual."""
    if x.is_cuda:
        from edgeserve_pod.kernels.fused_elementwise import add_rmsnorm, silu_mul
        a = add_rmsnorm(x, None, nw, EPS) if prologue == "rmsnorm" else silu_mul(x) if prologue == "silu_mul" else x
    else:
        a = G.apply_prologue(x, prologue, nw, EPS)
    y = F.linear(a, w)
    return y if res is None else res + y


def rel_err(y, ref):
    if torch.isnan(y).any():
        return float("nan")
    return ((y.float() - ref).norm() / ref.norm()).item()


def make_weights(shape, dev):
    model, role, n, k, prologue, residual = shape
    gen = torch.Generator(device=dev).manual_seed(n * 7 + k)
    r = copies_for(n * k * 2) if dev == "cuda" else 2
    ws = [(torch.randn(n, k, device=dev, generator=gen) * k ** -0.5).to(BF) for _ in range(r)]
    return ws, gen


def checker(shape, w, m, dev, gen):
    """Fresh inputs and their float32-chain reference, computed once; the returned function runs a
    config on them into a NaN-poisoned output and gives the relative error."""
    _, _, n, k, prologue, residual = shape
    x, nw, res = operands(m, n, k, prologue, residual, dev, gen)
    ref = G.gemv_reference(x, w, prologue=prologue, norm_weight=nw, eps=EPS, out_dtype=torch.float32)
    ref = ref if res is None else ref + res.float()

    def err(cfg):
        out = torch.full((m, n), float("nan"), dtype=BF, device=dev)
        return rel_err(G.gemv(x, w, prologue=prologue, norm_weight=nw, eps=EPS, residual=res, config=cfg, out=out), ref)
    return err


def sweep_shape(shape, cands, dev, failed, sweep_log, replays):
    """M = 1: every config, timed and checked; returns (best config, its time, its error)."""
    _, _, n, k, prologue, residual = shape
    ws, gen = make_weights(shape, dev)
    check = checker(shape, ws[0], 1, dev, gen)
    x, nw, res = operands(1, n, k, prologue, residual, dev, gen)
    best = (float("inf"), None, None)
    for cfg in cands:
        if (prologue, residual, key(cfg)) in failed:
            continue
        try:
            e = check(cfg)
            t = graph_time_us([lambda i=i, c=cfg: G.gemv(x, ws[i], prologue=prologue, norm_weight=nw, eps=EPS,
                                                         residual=res, config=c) for i in range(len(ws))], replays)
        except Exception as ex:
            sweep_log.append({"N": n, "K": k, "cfg": cfg, "error": repr(ex)[:160]})
            continue
        sweep_log.append({"N": n, "K": k, "prologue": prologue, "residual": residual, "cfg": cfg, "us": t, "err": e})
        if e == e and e < 1e-2 and t < best[0]:
            best = (t, cfg, e)
    del ws, check
    return best


def measure_shape(shape, cfg, dcfg, ccfg, bw, dev):
    """The winner and the default at M = 1 and 4 beside cuBLAS, the unfused chain and the limit."""
    model, role, n, k, prologue, residual = shape
    ws, gen = make_weights(shape, dev)
    r = len(ws)
    row = {"model": model, "role": role, "N": n, "K": k, "prologue": prologue, "residual": residual, "copies": r,
           "best_cfg": cfg, "default_cfg": dcfg, "committed_cfg": ccfg}
    for m in (1, 4):
        x, nw, res = operands(m, n, k, prologue, residual, dev, gen)
        fus = dict(prologue=prologue, norm_weight=nw, eps=EPS, residual=res)
        a = G.apply_prologue(x, prologue, nw, EPS)
        row[f"ours_us_m{m}"] = graph_time_us([lambda i=i: G.gemv(x, ws[i], **fus, config=cfg) for i in range(r)])
        row[f"default_us_m{m}"] = graph_time_us([lambda i=i: G.gemv(x, ws[i], **fus, config=dcfg) for i in range(r)])
        row[f"committed_us_m{m}"] = graph_time_us([lambda i=i: G.gemv(x, ws[i], **fus, config=ccfg)
                                                   for i in range(r)]) if ccfg is not None else None
        row[f"plain_us_m{m}"] = graph_time_us([lambda i=i: G.gemv(a, ws[i], config=cfg) for i in range(r)])
        row[f"cublas_us_m{m}"] = graph_time_us([lambda i=i: F.linear(a, ws[i]) for i in range(r)])
        row[f"chain_us_m{m}"] = graph_time_us([lambda i=i: chain(x, ws[i], prologue, nw, res) for i in range(r)])
        moved = n * k * 2 + m * (k * (2 if prologue == "silu_mul" else 1) + n * (2 if residual else 1)) * 2
        row[f"limit_us_m{m}"] = moved / bw * 1e6
        row[f"tbps_m{m}"] = moved / (row[f"ours_us_m{m}"] * 1e-6) / 1e12
        check = checker(shape, ws[0], m, dev, gen)
        row[f"err_m{m}"], row[f"err_default_m{m}"] = check(cfg), check(dcfg)
    del ws
    if dev == "cuda":
        torch.cuda.empty_cache()
    return row


def fusion_name(prologue, residual):
    return "+".join([p for p in (prologue, "residual" if residual else None) if p]) or "none"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results/pod-engine"))
    ap.add_argument("--quick", action="store_true", help="default config only, no sweep")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--commit", default=None, help="the sha measured (a git archive has no .git)")
    ap.add_argument("--sweep-budget-s", type=float, default=150.0,
                    help="past this many seconds from the start, later shapes try only the winners so far and the default")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU (interpreter): checks the script")
    args = ap.parse_args()
    t0 = time.time()
    dev = "cpu" if args.cpu_smoke else "cuda"
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu (smoke: interpreter, not a measurement)"
    shapes = SMOKE_SHAPES if args.cpu_smoke else SHAPES
    print("torch", torch.__version__, "triton", G.triton.__version__, name, flush=True)
    bw = copy_bandwidth(dev)
    print(f"copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)

    if args.cpu_smoke:
        cands = [G._cfg(8, 32, 4, 1), G._cfg(16, 64, 4, 1, defer=True), G._cfg(8, 32, 4, 1, prefetch=True)]
    else:
        cands = candidates()
    failed = set()
    sms = torch.cuda.get_device_properties(0).multi_processor_count if dev == "cuda" else 132
    defaults = {s[:4]: G.default_config(s[2], s[3], sms) for s in shapes}
    variants = sorted({(s[4], s[5]) for s in shapes}, key=str)
    if not args.quick and dev == "cuda":
        jobs = [(p, r, 1, c) for (p, r) in variants for c in cands]
        ok = precompile(jobs, args.workers)
        for (p, r, _, c), v in zip(jobs, ok):
            if v is not True:
                failed.add((p, r, key(c)))
                print("  compile failed:", p, r, c, v, flush=True)
        print(f"precompiled {len(jobs)} kernels ({len(failed)} failed) in {time.time() - t0:.0f} s", flush=True)

    os.makedirs(args.out, exist_ok=True)
    sweep_log, winners = [], {}
    for shape in shapes:
        sc = [defaults[shape[:4]]] if args.quick else cands
        if time.time() - t0 > args.sweep_budget_s:  # keep the whole call inside the device limit
            sc = [defaults[shape[:4]]] + [c for c in winners.values() if c is not None]
            print(f"  sweep budget spent: {shape[:4]} tries {len(sc)} configs", flush=True)
        t, cfg, e = sweep_shape(shape, sc, dev, failed, sweep_log, replays=3 if args.cpu_smoke else 7)
        winners[shape[:4]] = cfg
        print(f"swept {shape[0]} {shape[1]:8s} N={shape[2]:6d} K={shape[3]:5d}: {t:8.2f} us err {e} {cfg}"
              f"  ({time.time() - t0:.0f} s)", flush=True)
        with open(os.path.join(args.out, "sweep.json"), "w") as f:  # partial results survive a time-out
            json.dump({"sweep": sweep_log}, f)
    if dev == "cuda":  # compile what the measurement adds: M = 4, the plain variant, the defaults
        jobs = set()
        for s in shapes:
            for cfg in (winners[s[:4]], defaults[s[:4]], G.CONFIGS.get(s[2:4])):
                if cfg is None:
                    continue
                jobs |= {(s[4], s[5], 1, key(cfg)), (s[4], s[5], 4, key(cfg)), (None, False, 1, key(cfg)),
                         (None, False, 4, key(cfg))}
        jobs = [(p, r, m, json.loads(c)) for (p, r, m, c) in sorted(jobs, key=str)]
        precompile(jobs, args.workers)
        print(f"precompiled {len(jobs)} more at {time.time() - t0:.0f} s", flush=True)

    rows = []
    for shape in shapes:
        if winners[shape[:4]] is None:
            rows.append({"model": shape[0], "role": shape[1], "N": shape[2], "K": shape[3], "error": "no config passed"})
            print(f"{shape}: no config passed", flush=True)
            continue
        try:
            row = measure_shape(shape, winners[shape[:4]], defaults[shape[:4]], G.CONFIGS.get(shape[2:4]), bw, dev)
        except Exception as ex:  # e.g. the winner does not compile at M = 4: say so, go on
            rows.append({"model": shape[0], "role": shape[1], "N": shape[2], "K": shape[3], "error": repr(ex)[:300]})
            print(f"{shape}: measurement failed: {ex!r}"[:400], flush=True)
            continue
        rows.append(row)
        print(f"{row['model']} {row['role']:8s} N={row['N']:6d} K={row['K']:5d} {fusion_name(row['prologue'], row['residual']):18s}"
              f" M=1: ours {row['ours_us_m1']:7.2f} us ({row['tbps_m1']:.2f} TB/s) default {row['default_us_m1']:7.2f}"
              f" committed {row['committed_us_m1'] or float('nan'):7.2f}"
              f" plain {row['plain_us_m1']:7.2f} | cuBLAS {row['cublas_us_m1']:7.2f} chain {row['chain_us_m1']:7.2f}"
              f" | limit {row['limit_us_m1']:7.2f} | M=4: ours {row['ours_us_m4']:7.2f} cuBLAS {row['cublas_us_m4']:7.2f}"
              f" chain {row['chain_us_m4']:7.2f} | err {row['err_m1']:.1e}/{row['err_m4']:.1e}", flush=True)
        with open(os.path.join(args.out, "sweep.json"), "w") as f:
            json.dump({"rows": rows, "sweep": sweep_log}, f)
    print(f"total {time.time() - t0:.0f} s", flush=True)

    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    metrics = []
    for r in rows:
        if "error" in r:
            continue
        for m in (1, 4):
            fusion = fusion_name(r["prologue"], r["residual"])
            metrics.append({
                "name": f"gemm_us[gemv,{r['model']} {r['role']},N={r['N']},K={r['K']},M={m},bf16,fused={fusion}]",
                "value": r[f"ours_us_m{m}"], "unit": "us", "better": "lower",
                "peer": {"name": "cuBLAS F.linear (without the fused work)", "value": r[f"cublas_us_m{m}"]},
                "limit": {"value": r[f"limit_us_m{m}"], "how": "W + activation + output (+ residual) bytes / measured copy bandwidth"},
                "extra": {"unfused_chain_us": r[f"chain_us_m{m}"], "default_config_us": r[f"default_us_m{m}"],
                          "plain_gemv_us": r[f"plain_us_m{m}"], "TBps": r[f"tbps_m{m}"],
                          "config": r["best_cfg"], "config_swept_at": "M=1", "rel_err_vs_f32_chain": r[f"err_m{m}"],
                          "default_config": r["default_cfg"], "default_rel_err": r[f"err_default_m{m}"],
                          "committed_config": r["committed_cfg"], "committed_config_us": r[f"committed_us_m{m}"]},
            })
    best = [{"N": r["N"], "K": r["K"], "config": r["best_cfg"], "us_m1": r["ours_us_m1"]} for r in rows if "best_cfg" in r]
    doc = {"topic": "pod-engine", "device": name, "commit": commit,
           "command": " ".join(["python bench/gemv_sweep.py"] + ["DIR" if a == args.out else a for a in sys.argv[1:]]),
           "date": time.strftime("%Y-%m-%d"), "ceilings": {"copy_TBps": bw / 1e12},
           "timing": "CUDA-graph replay of R calls over R weight copies (> 2x L2), median of replays / R",
           "metrics": metrics, "best_configs": best}
    with open(os.path.join(args.out, "gemv_sweep.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "best_configs.json"), "w") as f:
        json.dump(best, f, indent=1)
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"rows": rows, "sweep": sweep_log}, f)
    print("\n# CONFIGS for edgeserve_pod/kernels/gemv.py (M=1 sweep; us at M=1)")
    for b in best:
        c = b["config"]
        pf = ", prefetch=True" if c.get("PREFETCH") else ""
        print(f"    ({b['N']}, {b['K']}): _cfg({c['BLOCK_N']}, {c['BLOCK_K']}, {c['num_warps']}, {c['num_stages']}, "
              f"defer={c['DEFER']}{pf}),  # {b['us_m1']:.2f} us")


if __name__ == "__main__":
    main()
