"""Sparse-attention benchmark (issue 6, and the FP8-KV decode part of issue 7), one run:

  decode, GQA 32/8, d=128, bf16, paged (block 16 = engine default, and 64):
    ours dense | ours Quest budget 2048 / 4096 (score + top-k + attend) | torch SDPA (contiguous KV)
    + the bandwidth limit of the selected pages, the score+top-k share of the step, CUDA-graph replay
  FP8 KV (e4m3, per-head scales read in-kernel) vs bf16 KV, ours dense, L = 8K / 32K / 128K
  prefill, 32 heads, L = 32K: ours block-sparse with 50% streaming heads | ours dense causal |
    SDPA causal | flex_attention on the same mask (and on the token-exact sink+window mask)
  prefix_prefill (`--only prefix_prefill`): 4K new tokens over 28K cached, paged, GQA 32/8: ours
    with streaming-head masks (50% streaming kv heads) | ours dense paged prefill | SDPA lower-right causal
  correctness of every variant vs a float32 torch reference on fresh random inputs.
  e2e / e2e_ring: the engine, 8B shape at 32K; e2e_ring: streaming_kv=ring vs full with a 50%
    streaming head map (decode tok/s, paged-KV bytes per token, blocks allocated, ring bytes)

Writes BENCH.md JSON to $OUT (or --out) as sparse-attention.json; copy it into
bench/results/sparse-attention/<date>-<device>.json. `--smoke` runs tiny sizes on CPU through the
Triton interpreter to check the script itself (no numbers worth keeping).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import traceback

ap = argparse.ArgumentParser()
ap.add_argument("--smoke", action="store_true")
ap.add_argument("--out", default=os.environ.get("OUT", "."))
ap.add_argument("--commit", default="unknown")
ap.add_argument("--only", default="decode,fp8,prefill,e2e,e2e_ring")
ap.add_argument("--decode-cases", default=None, help="B:L,B:L,... (default: 1:32768,1:131072,8:32768)")
ap.add_argument("--pages", default=None, help="page sizes for decode, e.g. 16,64")
ap.add_argument("--prefill-variants", default=None,
                help="impl:block_m:block_n:warps:stages:ws,... (default: the list in PREFILL_VARIANTS)")
args = ap.parse_args()
if args.smoke:
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))
from edgeserve_pod.kernels.block_sparse_prefill import block_sparse_prefill, plan_block_sparse  # noqa: E402
from edgeserve_pod.kernels.paged_attention import FP8, decode_num_splits, paged_decode  # noqa: E402
from edgeserve_pod.kernels.quest import quest_scores, select_pages  # noqa: E402

CPU_ONLY = args.smoke or not torch.cuda.is_available()
DEV = "cpu" if CPU_ONLY else "cuda"
torch.manual_seed(0)
METRICS: list[dict] = []


from bench_common import cpu_name as _cpu_name  # noqa: E402


DEVICE_NAME = ("cpu (smoke)" if args.smoke else _cpu_name()) if CPU_ONLY else torch.cuda.get_device_name()
SMS = 8 if CPU_ONLY else torch.cuda.get_device_properties(0).multi_processor_count


def bench(fn, rep=60) -> float:
    """Median ms. GPU: CUDA events after warm-up (triton do_bench). CPU smoke: 5 runs."""
    if args.smoke:
        fn()
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        return sorted(ts)[2]
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def metric(name, value, unit, better, peer=None, limit=None, target=None, note=None):
    m = {"name": name, "value": round(float(value), 4), "unit": unit, "better": better}
    if peer:
        m["peer"] = {"name": peer[0], "value": round(float(peer[1]), 4)}
    if limit:
        m["limit"] = {"value": round(float(limit[0]), 4), "how": limit[1]}
    if target:
        m["target"] = {"value": round(float(target[0]), 4), "source": target[1]}
    if note:
        m["note"] = note
    METRICS.append(m)
    print(f"  {name}: {value:.4g} {unit}" + (f" | peer {peer[0]} {peer[1]:.4g}" if peer else "")
          + (f" | limit {limit[0]:.4g}" if limit else "") + (f" | target {target[0]:.4g}" if target else "")
          + (f" | {note}" if note else ""), flush=True)


def save():
    doc = {"topic": "sparse-attention", "device": DEVICE_NAME, "commit": args.commit,
           "command": "python bench/sparse_attention.py " + " ".join(sys.argv[1:]),
           "date": datetime.date.today().isoformat(), "metrics": METRICS}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sparse-attention.json"), "w") as f:
        json.dump(doc, f, indent=1)


def section(fn):
    try:
        fn()
    except Exception:
        traceback.print_exc()
        print(f"!! section {fn.__name__} failed", flush=True)
    save()


# ------------------------------------------------------------------------------ ceilings
if CPU_ONLY or args.only == "prefill_check":  # a check child needs no ceiling
    BW = 1e11
else:
    a = torch.empty(1 << 29, dtype=torch.bfloat16, device=DEV).normal_()
    b_ = torch.empty_like(a)
    BW = 2 * a.numel() * 2 / (bench(lambda: b_.copy_(a), rep=100) * 1e-3)  # bytes/s
    del a, b_
if not CPU_ONLY and args.only != "prefill_check":
    print(f"{DEVICE_NAME}: copy bandwidth {BW / 1e12:.2f} TB/s", flush=True)
    metric("copy_bandwidth_TBps", BW / 1e12, "TB/s", "higher", note="ceiling: 1 GiB bf16 copy, read + write bytes")

H, HKV, D = 32, 8, 128
SCALE = D ** -0.5
if args.smoke:
    H, HKV, D = 8, 2, 32
    SCALE = D ** -0.5
DECODE_CASES = [(1, 256), (2, 512)] if args.smoke else [(1, 32768), (1, 131072), (8, 32768)]
if args.decode_cases:
    DECODE_CASES = [tuple(int(v) for v in c.split(":")) for c in args.decode_cases.split(",")]
BUDGETS = [64, 128] if args.smoke else [2048, 4096]
PAGES = [16] if args.smoke else [16, 64]
if args.pages:
    PAGES = [int(v) for v in args.pages.split(",")]
DECODE_CFGS = [(64, 4, 2, 1)] if args.smoke else [(64, 4, 2, 1), (128, 4, 2, 1), (64, 4, 3, 2), (128, 8, 3, 1), (32, 4, 2, 2)]


def make_paged(B, L, bs, dtype=torch.bfloat16):
    """Random paged KV (blocks shuffled over the pool) + its contiguous (B, Hkv, L, D) copy."""
    nb = B * L // bs
    kc = torch.randn(nb, bs, HKV, D, device=DEV, dtype=dtype)
    vc = torch.randn(nb, bs, HKV, D, device=DEV, dtype=dtype)
    table = torch.randperm(nb, device=DEV).view(B, L // bs).to(torch.int32)
    return kc, vc, table


def contiguous_kv(kc, table):  # (B, Hkv, L, D)
    B, nbs = table.shape
    return kc[table.long()].reshape(B, nbs * kc.shape[1], HKV, D).transpose(1, 2).contiguous()


def ref_attend(q, k, v, keep=None):
    """float32 decode reference. q (B, H, D); k, v (B, Hkv, L, D); keep (B, Hkv, L) bool or None."""
    qf = q.float()[:, :, None]
    kf = k.float().repeat_interleave(H // HKV, 1)
    vf = v.float().repeat_interleave(H // HKV, 1)
    s = (qf @ kf.transpose(-1, -2)) * SCALE  # (B, H, 1, L)
    if keep is not None:
        s = s.masked_fill(~keep.repeat_interleave(H // HKV, 1)[:, :, None], float("-inf"))
    return (s.softmax(-1) @ vf)[:, :, 0]


def best_of(run_cfg, cfgs):
    best = None
    for cfg in cfgs:
        try:
            t = bench(lambda: run_cfg(cfg))
        except Exception as e:  # a config that does not compile (resources) is skipped, and said so
            print(f"    config {cfg} failed: {repr(e)[:120]}", flush=True)
            continue
        if best is None or t < best[0]:
            best = (t, cfg)
    return best


def dense_call(q, kc, vc, table, ctx, cfg, ks=None, vs=None, page_idx=None, num_sel=None, fp8_dot=None):
    bn, warps, stages, mult = cfg
    max_tok = (page_idx.shape[2] if page_idx is not None else table.shape[1]) * kc.shape[1]
    ns = decode_num_splits(q.shape[0], HKV, max_tok, bn, SMS) * mult
    return paged_decode(q, kc, vc, table, ctx, SCALE, ks, vs, page_idx, num_sel, num_splits=ns, block_n=bn,
                        num_warps=warps, num_stages=stages, fp8_dot=fp8_dot)


def graph_time(fn):
    if args.smoke:
        return float("nan")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return bench(lambda: g.replay())


# ------------------------------------------------------------------------------ decode
def decode():
    print("\n# decode attention, GQA %d/%d, d=%d, bf16" % (H, HKV, D), flush=True)
    for B, L in DECODE_CASES:
        q = torch.randn(B, H, D, device=DEV, dtype=torch.bfloat16)
        ctx = torch.full((B,), L, dtype=torch.int32, device=DEV)
        kv_bytes = B * L * HKV * D * 2 * 2
        sdpa_ms = None
        for bs in PAGES:
            kc, vc, table = make_paged(B, L, bs)
            k, v = contiguous_kv(kc, table), contiguous_kv(vc, table)
            ref = ref_attend(q, k, v)
            if sdpa_ms is None:
                q4 = q[:, :, None]
                sdpa_ms = bench(lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True))
                sdpa_g = graph_time(lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True))
                metric(f"decode_attention_us[sdpa,B={B},L={L}]", sdpa_ms * 1e3, "us", "lower",
                       limit=(kv_bytes / BW * 1e6, "all KV bytes / measured copy bandwidth"),
                       note=f"eager; CUDA graph {sdpa_g * 1e3:.1f} us")
            t, cfg = best_of(lambda c: dense_call(q, kc, vc, table, ctx, c), DECODE_CFGS)
            err = (dense_call(q, kc, vc, table, ctx, cfg).float() - ref).abs().max().item()
            t_g = graph_time(lambda: dense_call(q, kc, vc, table, ctx, cfg))
            metric(f"decode_attention_us[dense,B={B},L={L},page={bs}]", t * 1e3, "us", "lower",
                   peer=("torch SDPA", sdpa_ms * 1e3), limit=(kv_bytes / BW * 1e6, "all KV bytes / copy bandwidth"),
                   note=f"eager; CUDA graph {t_g * 1e3:.1f} us; cfg(block_n,warps,stages,split_mult)={cfg}; "
                        f"max|err| vs fp32 {err:.2e}")
            kmin, kmax = kc.amin(1), kc.amax(1)  # (nb, Hkv, D): what update_page_minmax keeps
            for budget in BUDGETS:
                def select():
                    s = quest_scores(q, kmin, kmax, table, ctx, bs)
                    return select_pages(s, ctx, budget, bs)

                idx, nsel = select()
                t_q, cfg_q = best_of(lambda c: dense_call(q, kc, vc, table, ctx, c, page_idx=idx, num_sel=nsel),
                                     DECODE_CFGS)

                def step():
                    i, n = select()
                    return dense_call(q, kc, vc, table, ctx, cfg_q, page_idx=i, num_sel=n)

                t_step = bench(step)
                t_sel = bench(select)
                t_sel_g = graph_time(select)
                t_sel_torch = bench(lambda: select_pages(quest_scores(q, kmin, kmax, table, ctx, bs), ctx, budget, bs,
                                                         method="torch"))
                t_graph = graph_time(step)
                # LServe-style reuse of a selection: the attend part alone, from a graph
                t_att = graph_time(lambda: dense_call(q, kc, vc, table, ctx, cfg_q, page_idx=idx, num_sel=nsel))
                keep = torch.zeros(B, HKV, L // bs, dtype=torch.bool, device=DEV)
                for b in range(B):
                    for h in range(HKV):
                        keep[b, h, idx[b, h, :nsel[b, h]].long()] = True
                keep_tok = keep.repeat_interleave(bs, 2)
                err = (step().float() - ref_attend(q, k, v, keep_tok)).abs().max().item()
                # selection quality: overlap with the top pages by the float32 bound
                s32 = (torch.maximum(q.float().view(B, HKV, H // HKV, 1, D) * kmin.float()[table.long()].permute(0, 2, 1, 3)[:, :, None],
                                     q.float().view(B, HKV, H // HKV, 1, D) * kmax.float()[table.long()].permute(0, 2, 1, 3)[:, :, None])
                       .sum(-1).amax(2))
                s32[:, :, 0] = s32[:, :, -1] = float("inf")
                top32 = s32.topk(idx.shape[2], -1).indices
                ref_keep = torch.zeros_like(keep).scatter_(2, top32, True)
                recall = (keep & ref_keep).sum().item() / ref_keep.sum().item()
                sel_bytes = B * HKV * min(budget, L) * D * 2 * 2
                meta_bytes = B * HKV * (L // bs) * D * 2 * 2
                cond = f"B={B},L={L},budget={budget},page={bs}"
                tgt = None
                if L == 131072 and budget == 4096:
                    tgt = (sdpa_ms * 1e3 / 6, "issue 6: >= 6x SDPA at 128K, budget 4096")
                if B == 8 and L == 32768:
                    tgt = (sdpa_ms * 1e3 / 4, "issue 6: >= 4x SDPA at B=8, 32K")
                metric(f"decode_attention_us[quest,{cond}]", t_step * 1e3, "us", "lower",
                       peer=("torch SDPA (dense)", sdpa_ms * 1e3),
                       limit=(sel_bytes / BW * 1e6, "selected K+V bytes / copy bandwidth"
                              f" (+ page min/max read: {(sel_bytes + meta_bytes) / BW * 1e6:.2f} us)"),
                       target=tgt,
                       note=f"eager launches; attend-only {t_q * 1e3:.1f} us cfg={cfg_q}; max|err| vs fp32 on the "
                            f"selected pages {err:.2e}; page recall vs fp32 bound {recall:.3f}")
                metric(f"decode_attention_us[quest_cudagraph,{cond}]", t_graph * 1e3, "us", "lower",
                       peer=("torch SDPA (dense)", sdpa_ms * 1e3), limit=(sel_bytes / BW * 1e6, "selected K+V bytes / copy bandwidth"),
                       target=tgt, note="whole step (score, top-k, attend, merge) replayed from one CUDA graph")
                metric(f"quest_select_share[{cond}]", t_sel_g / t_graph, "fraction", "lower",
                       target=(0.15, "issue 6: scoring + top-k <= 15% of the step"),
                       note=f"CUDA graphs: score+top-k {t_sel_g * 1e3:.1f} us of a {t_graph * 1e3:.1f} us step; "
                            f"eager: {t_sel * 1e3:.1f} of {t_step * 1e3:.1f} us; "
                            f"with torch.topk instead of our radix select: {t_sel_torch * 1e3:.1f} us")
                for every in (4, 8):
                    amort = t_att + t_sel_g / every
                    metric(f"decode_attention_us[quest_cudagraph,reselect_every={every},{cond}]", amort * 1e3,
                           "us", "lower", peer=("torch SDPA (dense)", sdpa_ms * 1e3), target=tgt,
                           note=f"LServe-style reuse: one selection per {every} decode steps; per-step average = attend "
                                f"+ select/{every}; select share {t_sel_g / every / amort:.3f}")
            del kc, vc, k, v, kmin, kmax
            torch.cuda.empty_cache() if not args.smoke else None


# ------------------------------------------------------------------------------ fp8
def fp8():
    print("\n# FP8 (e4m3, per-kv-head scales in-kernel) vs bf16 KV, ours dense decode", flush=True)
    cases = [(1, 256)] if args.smoke else [(1, 8192), (1, 32768), (1, 131072), (8, 32768)]
    for B, L in cases:
        bs = 16
        q = torch.randn(B, H, D, device=DEV, dtype=torch.bfloat16)
        ctx = torch.full((B,), L, dtype=torch.int32, device=DEV)
        kc, vc, table = make_paged(B, L, bs)
        ks = kc.float().abs().amax((0, 1, 3)) / 448
        vs = vc.float().abs().amax((0, 1, 3)) / 448
        kq = (kc.float() / ks[None, None, :, None]).to(FP8)
        vq = (vc.float() / vs[None, None, :, None]).to(FP8)
        t16, cfg16 = best_of(lambda c: dense_call(q, kc, vc, table, ctx, c), DECODE_CFGS + FP8_CFGS)
        t8, cfg8 = best_of(lambda c: dense_call(q, kq, vq, table, ctx, c, ks, vs), DECODE_CFGS + FP8_CFGS)
        g16 = graph_time(lambda: dense_call(q, kc, vc, table, ctx, cfg16))
        g8 = graph_time(lambda: dense_call(q, kq, vq, table, ctx, cfg8, ks, vs))
        # the previous widening of e4m3 tiles (to bf16, through float32), same config, for the record
        t8_bf, cfg8_bf = best_of(lambda c: dense_call(q, kq, vq, table, ctx, c, ks, vs, fp8_dot=torch.bfloat16),
                                 DECODE_CFGS + FP8_CFGS)
        g8_bf = graph_time(lambda: dense_call(q, kq, vq, table, ctx, cfg8_bf, ks, vs, fp8_dot=torch.bfloat16))
        kd = contiguous_kv(kq, table).float() * ks[None, :, None, None]
        vd = contiguous_kv(vq, table).float() * vs[None, :, None, None]
        err = (dense_call(q, kq, vq, table, ctx, cfg8, ks, vs).float() - ref_attend(q, kd, vd)).abs().max().item()
        bytes8 = B * L * HKV * D * 2
        metric(f"decode_attention_us[dense,kv=fp8,B={B},L={L},page={bs}]", g8 * 1e3, "us", "lower",
               peer=("ours dense, bf16 KV (CUDA graph)", g16 * 1e3), limit=(bytes8 / BW * 1e6, "fp8 K+V bytes / copy bandwidth"),
               target=(g16 * 1e3 / 1.8, "issue 7: fp8 >= 1.8x bf16 KV at L >= 8K"),
               note=f"CUDA graph replay; eager fp8 {t8 * 1e3:.1f} us vs bf16 {t16 * 1e3:.1f} us; cfg fp8 {cfg8}, "
                    f"bf16 {cfg16}; max|err| vs fp32 on the dequantized cache {err:.2e}; e4m3 tiles widened to "
                    f"bf16 instead of fp16: {g8_bf * 1e3:.1f} us (cfg {cfg8_bf})")
        metric(f"fp8_kv_speedup[dense,B={B},L={L}]", g16 / g8, "x", "higher", target=(1.8, "issue 7"),
               note=f"CUDA graph times; eager {t16 / t8:.2f}x")
        if L >= 32768 and B == 1:
            kmin, kmax = kc.amin(1), kc.amax(1)
            budget = BUDGETS[-1]

            def step(kk, vv, a, b):
                s = quest_scores(q, kmin, kmax, table, ctx, bs)
                i, n = select_pages(s, ctx, budget, bs)
                return dense_call(q, kk, vv, table, ctx, cfg8, a, b, page_idx=i, num_sel=n)

            t_q16 = graph_time(lambda: step(kc, vc, None, None))
            t_q8 = graph_time(lambda: step(kq, vq, ks, vs))
            metric(f"decode_attention_us[quest,kv=fp8,B={B},L={L},budget={budget},page={bs}]", t_q8 * 1e3, "us",
                   "lower", peer=("ours Quest, bf16 KV", t_q16 * 1e3), note="CUDA graph replay, whole step")
        del kc, vc, kq, vq, kd, vd
        torch.cuda.empty_cache() if not args.smoke else None


# ------------------------------------------------------------------------------ prefill
# (block_n, warps, stages, split_mult). Compiled for sm_90, the decode loop gets one K/V buffer up
# to num_stages 4 (the block-table load takes a pipeline stage) and two from 5: the stage-5/6 rows
# are the double-buffered configs
FP8_CFGS = [] if args.smoke else [(256, 4, 2, 1), (256, 8, 2, 1), (128, 4, 3, 4), (256, 8, 3, 2), (128, 4, 4, 2),
                                   (256, 8, 4, 1), (128, 4, 5, 2), (128, 8, 5, 1), (128, 8, 6, 2), (64, 8, 6, 2),
                                   (64, 4, 6, 4), (256, 8, 5, 1)]
# (impl, block_m, block_n, warps, stages, warp_specialize): configs of the block-sparse prefill
# kernel. A Hopper TMA / warp-specialized variant was timed here on 2026-11-22 (slower, and the
# warp-specialized form wrong; bench/results/sparse-attention/2026-11-22-h100-prefill-tma.json)
# and removed; the tuple keeps its fields so that the result names stay comparable.
PREFILL_VARIANTS = [("pointer", 32, 16, 4, 1, False)] if args.smoke else [
    ("pointer", 128, 128, 8, 3, False), ("pointer", 128, 64, 8, 3, False), ("pointer", 128, 64, 8, 4, False),
    ("pointer", 64, 64, 4, 3, False),
]
if args.prefill_variants:  # e.g. "pointer:128:128:8:3:0"
    PREFILL_VARIANTS = [(f[0], *(int(x) for x in f[1:5]), bool(int(f[5])))
                        for f in (v.split(":") for v in args.prefill_variants.split(","))]


def variant_name(var):
    impl, bm, bn, warps, stages, ws = var
    return f"{impl}/{bm}x{bn}/w{warps}/s{stages}" + ("/ws" if ws else "")


def run_variant(var, q, k, v, cu, max_len, kind, plan):
    impl, _, _, warps, stages, ws = var
    if impl != "pointer" or ws:
        raise ValueError(f"unknown prefill variant {variant_name(var)}: only the pointer kernel exists")
    return block_sparse_prefill(q, k, v, cu, max_len, kind, plan, SCALE, warps, stages)


def fresh_check(variants, sink, window):
    """Each variant on fresh random varlen GQA inputs vs the float32 reference (one per tile shape):
    max|err| per variant; a variant that fails to compile or run gets inf."""
    from edgeserve_pod.kernels.block_sparse_prefill import reference_block_sparse
    hq, hkv = (4, 2) if args.smoke else (8, 2)
    lens = [150, 77] if args.smoke else [3000, 1717]
    sink_c, window_c = (sink, window) if args.smoke else (128, 1024)
    T = sum(lens)
    q, k, v = (torch.randn(T, h, D, dtype=torch.bfloat16) for h in (hq, hkv, hkv))
    kind = torch.tensor([0, 1] * (hq // 2), dtype=torch.int32)
    cu = torch.tensor([0, lens[0], T], dtype=torch.int32)
    refs, errs = {}, {}
    for var in variants:
        bm, bn = var[1], var[2]
        plan = plan_block_sparse(max(lens), sink_c, window_c, bm, bn, device=DEV)
        if (bm, bn) not in refs:
            refs[(bm, bn)] = [reference_block_sparse(q[a:b], k[a:b], v[a:b], kind, plan, SCALE)
                              for a, b in ((0, lens[0]), (lens[0], T))]
        try:
            out = run_variant(var, q.to(DEV), k.to(DEV), v.to(DEV), cu.to(DEV), max(lens), kind.to(DEV), plan).cpu()
            pairs = [(out[a:b].float(), r) for (a, b), r in zip(((0, lens[0]), (lens[0], T)), refs[(bm, bn)])]
            errs[var] = (max((o - r).abs().max().item() for o, r in pairs), all(close(o, r) for o, r in pairs))
        except Exception as e:  # a config that does not compile (resources, Triton version) is said so
            print(f"    {variant_name(var)} failed: {repr(e)[:300]}", flush=True)
            errs[var] = (float("inf"), False)
    return errs


def fresh_check_isolated(variants, sink, window):
    """fresh_check with each variant in a child process on the GPU: a compiler abort or a CUDA fault
    in one variant rejects that variant instead of ending the run. The children fill Triton's disk
    cache, so this process does not compile them again."""
    if CPU_ONLY:
        return fresh_check(variants, sink, window)
    import subprocess
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    def check(var):
        spec = ":".join(str(int(x)) if not isinstance(x, str) else x for x in var)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = subprocess.run([sys.executable, os.path.abspath(__file__), "--only", "prefill_check",
                                    "--prefill-variants", spec, "--out", tmp], capture_output=True, text=True,
                                   timeout=240)
                lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PREFILL_CHECK ")]
                return lines, r.returncode, (r.stdout + r.stderr)[-600:]
            except subprocess.TimeoutExpired:
                return [], "timeout", ""

    errs = {}
    with ThreadPoolExecutor(6) as pool:  # compiles are CPU work; the checks are tiny on the GPU
        for var, (lines, rc, tail) in zip(variants, pool.map(check, variants)):
            if rc != 0 or not lines:
                print(f"    {variant_name(var)}: check process failed (rc {rc}): {tail}", flush=True)
                errs[var] = (float("inf"), False)
                continue
            e, ok = json.loads(lines[-1][len("PREFILL_CHECK "):])
            errs[var] = (float(e), bool(ok))
            if not ok:
                print(f"    {variant_name(var)}: check process output: {tail}", flush=True)
    return errs


def prefill_check():
    """Child of fresh_check_isolated: one variant from --prefill-variants."""
    (var,) = PREFILL_VARIANTS
    (e, ok), = fresh_check([var], 16, 64).values()
    print("PREFILL_CHECK " + json.dumps([e if math.isfinite(e) else 1e30, ok]), flush=True)


def close(out, ref) -> bool:
    """bf16 outputs: |err| <= 2e-2 + 2e-2 |ref| (bf16 rounding alone is up to 2^-9 |ref|)."""
    return bool(((out - ref).abs() <= 2e-2 + 2e-2 * ref.abs()).all())


def sampled_err(out, q, k, v, kind, plan, L):
    """(max|err|, close) vs float32 on 128 rows (96 random, the last 32) of one dense and one streaming head."""
    ok = True
    rows = torch.cat([torch.randint(0, L, (96,), device=DEV), torch.arange(L - 32, L, device=DEV)])
    err = 0.0
    for h in (0, 1):
        qb = rows // plan.block_m
        lists = plan.block_idx[int(kind[h])][qb].long()  # (R, max_nb)
        n_tot = plan.n_tot[int(kind[h])][qb]
        valid = torch.arange(lists.shape[1], device=DEV)[None] < n_tot[:, None]
        n_kvb = -(-L // plan.block_n)
        blocks = torch.zeros(len(rows), n_kvb + 1, dtype=torch.bool, device=DEV)
        blocks.scatter_(1, torch.where(valid, lists, n_kvb), True)
        allowed = blocks[:, :-1].repeat_interleave(plan.block_n, 1)[:, :L]
        allowed &= torch.arange(L, device=DEV)[None] <= rows[:, None]
        s = (q[rows, h].float() @ k[:, h].float().T) * SCALE
        ref = s.masked_fill(~allowed, float("-inf")).softmax(-1) @ v[:, h].float()
        err = max(err, (out[rows, h].float() - ref).abs().max().item())
        ok = ok and close(out[rows, h].float(), ref)
    return err, ok


def mm_rate_ceiling() -> float:
    """bf16 torch.mm (cuBLAS) rate on 8192^3, FLOP/s, recorded as a metric; nan on CPU."""
    if CPU_ONLY:
        return float("nan")
    a = torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16)
    rate = 2 * 8192 ** 3 / (bench(lambda: a @ a, rep=100) * 1e-3)
    del a
    metric("gemm_tflops[bf16,8192^3]", rate / 1e12, "TFLOP/s", "higher", note="ceiling: torch.mm (cuBLAS)")
    return rate


def prefill():
    L = 256 if args.smoke else 32768
    HP = 4 if args.smoke else 32
    sink, window = (16, 64) if args.smoke else (128, 4096)
    print(f"\n# prefill attention, {HP} heads, d={D}, L={L}, bf16; streaming = sink {sink} + window {window}", flush=True)
    mm_rate = mm_rate_ceiling()
    errs = fresh_check_isolated(PREFILL_VARIANTS, sink, window)
    for var, (e, ok) in errs.items():
        print(f"    fresh inputs, {variant_name(var)}: max|err| vs fp32 {e:.2e}" + ("" if ok else "  REJECTED"), flush=True)
    q4 = torch.randn(1, HP, L, D, device=DEV, dtype=torch.bfloat16)
    k4, v4 = torch.randn_like(q4), torch.randn_like(q4)
    q, k, v = (t[0].transpose(0, 1) for t in (q4, k4, v4))  # (L, H, D) views, no copy
    cu = torch.tensor([0, L], dtype=torch.int32, device=DEV)
    dense_kind = torch.zeros(HP, dtype=torch.int32, device=DEV)
    half_kind = (torch.arange(HP, device=DEV) % 2).to(torch.int32)  # odd heads streaming
    flops_causal = 4 * HP * L * L * D / 2
    sdpa = bench(lambda: F.scaled_dot_product_attention(q4, k4, v4, is_causal=True), rep=100)
    metric(f"prefill_attention_ms[sdpa_causal,H={HP},L={L}]", sdpa, "ms", "lower",
           note=f"{flops_causal / (sdpa * 1e-3) / 1e12:.0f} TFLOP/s")
    results = {"dense": {}, "stream50": {}}
    for var in PREFILL_VARIANTS:
        if not errs[var][1]:
            continue
        plan = plan_block_sparse(L, sink, window, var[1], var[2], device=DEV)
        for name, kind in (("dense", dense_kind), ("stream50", half_kind)):
            try:
                t = bench(lambda: run_variant(var, q, k, v, cu, L, kind, plan), rep=100)
                err, ok = sampled_err(run_variant(var, q, k, v, cu, L, kind, plan), q, k, v, kind, plan, L)
            except Exception as e:
                print(f"    {variant_name(var)} {name} failed: {repr(e)[:300]}", flush=True)
                continue
            n_tiles = int(plan.n_tot[kind.long()].sum())  # (q block, kv block) tiles over all heads
            tile_flops = 4 * D * var[1] * var[2] * n_tiles
            print(f"    {variant_name(var)} {name}: {t:.3f} ms, {tile_flops / (t * 1e-3) / 1e12:.0f} TFLOP/s on "
                  f"computed tiles, max|err| (sampled rows) {err:.2e}" + ("" if ok else "  REJECTED"), flush=True)
            if ok:
                results[name][var] = (t, err, plan, tile_flops)
    if not results["dense"] or not results["stream50"]:
        raise RuntimeError("no prefill variant passed the correctness checks")
    for name in ("dense", "stream50"):
        var, (t, err, plan, tile_flops) = min(results[name].items(), key=lambda kv: kv[1][0])
        pointer = [r[0] for vv, r in results[name].items() if vv[0] == "pointer"]
        tgt = (8.0, "issue 6: <= 8 ms with 50% streaming heads") if name == "stream50" else None
        useful = flops_causal if name == "dense" else None
        metric(f"prefill_attention_ms[ours_{name},H={HP},L={L}]", t, "ms", "lower", peer=("torch SDPA causal", sdpa),
               limit=(tile_flops / mm_rate * 1e3, "FLOPs of the computed tiles / bf16 torch.mm rate measured above"),
               target=tgt,
               note=f"best of {len(results[name])} correct variants: {variant_name(var)}; "
                    + (f"{useful / (t * 1e-3) / 1e12:.0f} TFLOP/s causal-useful; " if useful else "")
                    + f"{tile_flops / (t * 1e-3) / 1e12:.0f} TFLOP/s on computed tiles; "
                    f"pointer kernel best {min(pointer) if pointer else float('nan'):.3f} ms (same run); "
                    f"max|err| vs fp32 (sampled rows) {err:.2e}, fresh varlen GQA inputs {errs[var][0]:.2e}")
        for vv, (tv, ev, _, _) in sorted(results[name].items(), key=lambda kv: kv[1][0]):
            metric(f"prefill_attention_ms[variant={variant_name(vv)},{name},H={HP},L={L}]", tv, "ms", "lower",
                   peer=("torch SDPA causal", sdpa), note=f"max|err| sampled rows {ev:.2e}, fresh inputs {errs[vv][0]:.2e}")
    best_var, (best_t, _, best_plan, _) = min(results["stream50"].items(), key=lambda kv: kv[1][0])
    prefill_hybrid(q4, k4, v4, q, k, v, cu, L, half_kind, best_var, best_plan, best_t, sdpa)
    if args.smoke:
        return
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention)
    plan = best_plan
    bm, bn = best_var[1], best_var[2]
    n_sink = -(-sink // bn)
    stream_head = half_kind.bool()

    def same_mask(b, h, qi, ki):  # the plan's block-granular pattern, per head
        first_local = torch.clamp((qi // bm * bm - window) // bn, min=0)
        first_local = torch.where(first_local < n_sink, n_sink, first_local)
        kb = ki // bn
        return (qi >= ki) & (~stream_head[h] | (kb < n_sink) | (kb >= first_local))

    def exact_mask(b, h, qi, ki):
        return (qi >= ki) & (~stream_head[h] | (ki < sink) | (qi - ki < window))

    from torch.nn.attention.flex_attention import BlockMask

    def plan_block_mask():
        # our block lists, per head, as flex's (full, partial) kv-block lists: same blocks, same mask
        kinds = half_kind.long()
        n_full = plan.n_full[kinds][None]  # (1, H, n_qb)
        n_tot = plan.n_tot[kinds][None]
        idx = plan.block_idx[kinds][None]  # (1, H, n_qb, max_nb)
        j = torch.arange(idx.shape[-1], device=DEV)
        part = torch.gather(idx, 3, torch.clamp(j + n_full[..., None], max=idx.shape[-1] - 1))
        return BlockMask.from_kv_blocks(
            (n_tot - n_full).to(torch.int32), part.to(torch.int32).contiguous(), n_full.to(torch.int32),
            idx.contiguous(), BLOCK_SIZE=(bm, bn), mask_mod=lambda b, h, qi, ki: qi >= ki, seq_lengths=(L, L))

    for label, mm in (("same_mask", None), ("token_exact_sink_window", exact_mask)):
        try:
            bmask = plan_block_mask() if mm is None else create_block_mask(mm, 1, HP, L, L, device=DEV, _compile=True)
        except Exception as e:
            print(f"    flex {label}: block mask failed: {repr(e)[:200]}", flush=True)
            continue
        opts = None
        try:
            t = bench(lambda: flex(q4, k4, v4, block_mask=bmask), rep=100)
        except Exception as e:  # flex's tile must divide the mask's block size: ask for ours
            print(f"    flex {label} default tiles failed ({repr(e)[:160]}); retrying with BLOCK_N={bn}", flush=True)
            opts = {"BLOCK_M": bm, "BLOCK_N": bn}
            try:
                t = bench(lambda: flex(q4, k4, v4, block_mask=bmask, kernel_options=opts), rep=100)
            except Exception as e2:
                print(f"    flex {label} failed: {repr(e2)[:200]}", flush=True)
                continue
        metric(f"prefill_attention_ms[flex_{label},stream50,H={HP},L={L}]", t, "ms", "lower",
               note=f"torch.compile(flex_attention) with a per-head BlockMask; kernel_options {opts}")
        if label == "same_mask":
            o_flex = flex(q4, k4, v4, block_mask=bmask, kernel_options=opts)[0].transpose(0, 1)
            o_ours = run_variant(best_var, q, k, v, cu, L, half_kind, plan)
            diff = (o_flex.float() - o_ours.float()).abs().max().item()
            ours = best_t
            metric(f"prefill_attention_ms[ours_vs_flex_same_mask,stream50,H={HP},L={L}]", ours, "ms", "lower",
                   peer=("flex_attention, same mask", t), target=(t, "issue 6: not slower than flex on the same mask"),
                   note=f"max|ours - flex| {diff:.2e} (bf16 outputs)")
    causal_mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, 1, 1, L, L, device=DEV)
    t = bench(lambda: flex(q4, k4, v4, block_mask=causal_mask), rep=100)
    metric(f"prefill_attention_ms[flex_causal,H={HP},L={L}]", t, "ms", "lower")


def prefill_hybrid(q4, k4, v4, q, k, v, cu, L, kind, var, plan, t_ours, t_sdpa_all):
    """The retrieval (dense) heads through torch SDPA, the streaming heads through our kernel (head
    kind 2 = skip for the dense heads), outputs put together, as an engine would run a long one-shot
    prompt. The head gathers and the output scatter are timed with it. Checked like the others."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    HP = q.shape[1]
    dense_h = (kind == 0).nonzero().flatten()
    skip_kind = torch.where(kind == 0, 2, kind).to(torch.int32)
    out = torch.empty_like(q)

    def streaming_only():
        return block_sparse_prefill(q, k, v, cu, L, skip_kind, plan, SCALE, var[3], var[4], out=out)

    def dense_half(backends):
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q4[:, dense_h], k4[:, dense_h], v4[:, dense_h], is_causal=True, scale=SCALE)

    def hybrid(backends):
        streaming_only()
        out[:, dense_h] = dense_half(backends)[0].transpose(0, 1)
        return out

    t_stream = bench(streaming_only, rep=50)
    metric(f"prefill_attention_ms[ours_streaming_heads_only,stream50,H={HP},L={L}]", t_stream, "ms", "lower",
           note="block_sparse_prefill with the dense heads skipped (kind 2)")
    every = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    for label, backends in (("default", every), ("cudnn", [SDPBackend.CUDNN_ATTENTION]),
                            ("flash", [SDPBackend.FLASH_ATTENTION])):
        try:
            t_half = bench(lambda: dense_half(backends), rep=50)
            err, ok = sampled_err(hybrid(backends), q, k, v, kind, plan, L)
            t = bench(lambda: hybrid(backends), rep=50)
        except Exception as e:  # a backend that does not take these inputs on this device
            print(f"    hybrid {label}: failed {repr(e)[:200]}", flush=True)
            continue
        print(f"    hybrid sdpa[{label}] dense half {t_half:.3f} ms + ours streaming half {t_stream:.3f} ms -> "
              f"{t:.3f} ms; max|err| {err:.2e}" + ("" if ok else "  REJECTED"), flush=True)
        if ok:
            metric(f"prefill_attention_ms[hybrid_sdpa_{label}+ours_streaming,stream50,H={HP},L={L}]", t, "ms", "lower",
                   peer=("ours, one block-sparse kernel for all heads", t_ours),
                   target=(8.0, "issue 6: <= 8 ms with 50% streaming heads"),
                   note=f"SDPA ({label}) on the {len(dense_h)} dense heads alone {t_half:.3f} ms (all {HP} heads "
                        f"{t_sdpa_all:.3f} ms); ours on the streaming heads alone {t_stream:.3f} ms; head gathers and "
                        f"output scatter included; max|err| vs fp32 (sampled rows) {err:.2e}")


# ------------------------------------------------------------------------------ prefix prefill
def prefix_prefill():
    """New tokens over a cached prefix in the paged cache (the sparse backend's later chunks and
    prefix-cache hits), GQA 32/8, d = 128, bf16: ours with streaming-head masks (50% streaming kv
    heads, sink + window at the backend defaults, plan grid 128 x 64) | ours dense paged prefill |
    SDPA on the same q-over-full-k work (lower-right causal, contiguous KV expanded to 32 heads).
    Every config is checked against a float32 reference (all heads, all rows) before it is timed."""
    from torch.nn.attention.bias import causal_lower_right

    from edgeserve_pod.kernels.paged_attention import StreamingMask, paged_prefill
    cached, new = (200, 56) if args.smoke else (28672, 4096)
    sink, window, pbm, pbn = (16, 64, 32, 16) if args.smoke else (128, 4096, 128, 64)
    bs, L, G = 16, cached + new, H // HKV
    cfgs = [(16, 16, 4, 2), (32, 16, 4, 2)] if args.smoke else \
        [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3), (64, 128, 4, 2), (128, 128, 8, 2)]
    print(f"\n# prefill over a cached prefix, GQA {H}/{HKV}, d={D}, bf16, page {bs}: {cached} cached + {new} new; "
          f"streaming kv heads 1, 3, ...: sink {sink} + window {window} (plan grid {pbm}x{pbn})", flush=True)
    mm_rate = mm_rate_ceiling()
    kc, vc, table = make_paged(1, L, bs)
    k, v = contiguous_kv(kc, table)[0], contiguous_kv(vc, table)[0]  # (Hkv, L, D)
    q = torch.randn(new, H, D, device=DEV, dtype=torch.bfloat16)
    kind = ((torch.arange(H, device=DEV) // G) % 2).to(torch.int32)  # q heads of odd kv heads stream
    cu_q = torch.tensor([0, new], dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0, L], dtype=torch.int32, device=DEV)
    mask = StreamingMask(sink, window, pbm, pbn)
    pos = torch.arange(cached, L, device=DEV)  # (new,) absolute query positions

    # float32 reference; the streaming rows come from the one-shot plan's block lists
    plan = plan_block_sparse(L, sink, window, pbm, pbn, device=DEV)
    lists, n_tot = plan.block_idx[1][pos // pbm].long(), plan.n_tot[1][pos // pbm]  # (new, max_nb), (new,)
    n_kvb = -(-L // pbn)
    blocks = torch.zeros(new, n_kvb + 1, dtype=torch.bool, device=DEV)
    blocks.scatter_(1, torch.where(torch.arange(lists.shape[1], device=DEV)[None] < n_tot[:, None], lists, n_kvb), True)
    causal = torch.arange(L, device=DEV)[None] <= pos[:, None]  # (new, L)
    stream_ok = blocks[:, :-1].repeat_interleave(pbn, 1)[:, :L] & causal
    ref = {}
    for name in ("dense", "stream50"):
        r = torch.empty(new, H, D, device=DEV)
        for h in range(H):
            allowed = stream_ok if name == "stream50" and kind[h] else causal
            s = (q[:, h].float() @ k[h // G].float().T) * SCALE
            r[:, h] = s.masked_fill_(~allowed, float("-inf")).softmax(-1) @ v[h // G].float()
            del s
        ref[name] = r

    def tiles(bm, bn, streaming: bool) -> int:  # key tiles the kernel visits for one q head (its walk)
        p0 = cached + torch.arange(-(-new // bm)) * bm
        hi = torch.clamp(p0 + bm, max=L)
        if not streaming:
            return int((-(-hi // bn)).sum())
        lo0 = torch.clamp(torch.clamp(p0 // pbm * pbm - window, min=0) // pbn * pbn, min=mask.sink_end)
        a_end = -(-torch.clamp(hi, max=mask.sink_end) // bn) * bn
        b_lo = torch.maximum(lo0 // bn * bn, a_end)
        return int((a_end // bn + torch.clamp(-(-(hi - b_lo) // bn), min=0)).sum())

    n_stream = int(kind.sum())
    flops_dense = 4 * D * H * (new * cached + new * (new + 1) // 2)  # q @ k^T and p @ v, causal part only
    out = torch.empty_like(q)
    results = {}
    for name, kw in (("dense", {}), ("stream50", {"head_kind": kind, "streaming": mask})):
        for cfg in cfgs:
            bm, bn, warps, stages = cfg

            def run():
                return paged_prefill(q, kc, vc, table, cu_q, cu_k, new, SCALE, block_m=bm, block_n=bn,
                                     num_warps=warps, num_stages=stages, out=out, **kw)
            try:
                o = run().float()
            except Exception as e:  # a config that does not fit (shared memory) is skipped, and said so
                print(f"    {name} {cfg} failed: {repr(e)[:200]}", flush=True)
                continue
            err, ok = (o - ref[name]).abs().max().item(), close(o, ref[name])
            n_t = tiles(bm, bn, False) * (H - n_stream) + tiles(bm, bn, name == "stream50") * n_stream
            if not ok:
                print(f"    {name} {cfg}: max|err| vs fp32 {err:.2e}  REJECTED", flush=True)
                continue
            t = bench(run, rep=100)
            tile_flops = 4 * D * bm * bn * n_t
            print(f"    {name} cfg(block_m,block_n,warps,stages)={cfg}: {t:.3f} ms, {tile_flops / (t * 1e-3) / 1e12:.0f} "
                  f"TFLOP/s on visited tiles ({n_t} tiles), max|err| vs fp32 {err:.2e}", flush=True)
            results.setdefault(name, {})[cfg] = (t, err, tile_flops, n_t)
    del out
    q4 = q.transpose(0, 1)[None].contiguous()  # (1, H, new, D)
    k4, v4 = (t.repeat_interleave(G, 0)[None].contiguous() for t in (k, v))  # (1, H, L, D)
    bias = causal_lower_right(new, L)
    o = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=bias, scale=SCALE)[0].transpose(0, 1).float()
    sdpa_err, sdpa_ok = (o - ref["dense"]).abs().max().item(), close(o, ref["dense"])
    sdpa = bench(lambda: F.scaled_dot_product_attention(q4, k4, v4, attn_mask=bias, scale=SCALE), rep=100)
    cond = f"H={H}/{HKV},cached={cached},new={new}"
    metric(f"prefill_attention_ms[prefix,sdpa_lower_right_causal,{cond}]", sdpa, "ms", "lower",
           limit=(flops_dense / mm_rate * 1e3, "causal FLOPs / bf16 torch.mm rate measured above"),
           note=f"{flops_dense / (sdpa * 1e-3) / 1e12:.0f} TFLOP/s; contiguous KV expanded to {H} heads; "
                f"max|err| vs fp32 {sdpa_err:.2e}" + ("" if sdpa_ok else " (NOT within tolerance)"))
    if "dense" not in results or "stream50" not in results:
        raise RuntimeError("no prefix-prefill config passed the correctness check")
    best = {name: min(r.items(), key=lambda kv: kv[1][0]) for name, r in results.items()}
    t_dense = best["dense"][1][0]
    for name in ("dense", "stream50"):
        cfg, (t, err, tile_flops, n_t) = best[name]
        all_tiles = tiles(cfg[0], cfg[1], False) * H
        peer = ("torch SDPA, lower-right causal", sdpa) if name == "dense" else ("ours dense paged prefill", t_dense)
        metric(f"prefill_attention_ms[prefix,ours_{name},{cond}]", t, "ms", "lower", peer=peer,
               limit=(tile_flops / mm_rate * 1e3, "FLOPs of the visited tiles / bf16 torch.mm rate measured above"),
               note=f"best of {len(results[name])} correct configs: cfg(block_m,block_n,warps,stages)={cfg}; "
                    f"{tile_flops / (t * 1e-3) / 1e12:.0f} TFLOP/s on visited tiles; {n_t} of {all_tiles} "
                    f"dense tiles visited; SDPA {sdpa:.3f} ms ({sdpa / t:.2f}x); "
                    + (f"vs ours dense {t_dense / t:.2f}x; " if name != "dense" else "")
                    + f"max|err| vs fp32 (all rows, all heads) {err:.2e}")
        for c, (tc, ec, _, _) in sorted(results[name].items(), key=lambda kv: kv[1][0]):
            metric(f"prefill_attention_ms[prefix,variant={c[0]}x{c[1]}/w{c[2]}/s{c[3]},{name},{cond}]", tc, "ms",
                   "lower", peer=peer, note=f"max|err| vs fp32 {ec:.2e}")


# ------------------------------------------------------------------------------ engine
def e2e():
    """Decode tok/s of the 8B shape (random weights) at 32K context, sparse (Quest, budget 4096,
    no streaming heads: a random model has no head map) vs dense Triton attention, CUDA graphs."""
    import gc

    from edgeserve_pod.config import EngineConfig
    from edgeserve_pod.engine.engine import LLMEngine
    from edgeserve_pod.engine.sequence import SamplingParams
    from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint

    path = write_random_checkpoint("llama-3.1-8b", "/tmp/llama-3.1-8b", seed=0, device="cuda")
    L, n = 32768, 128
    prompt = torch.randint(0, 128000, (L,), generator=torch.Generator().manual_seed(1)).tolist()
    rates = {}
    # no streaming heads (a random model has none to find); the 8-step reuse is a model setting, as
    # per-request overrides run decode eagerly (graphs are captured with the model's settings)
    os.makedirs(args.out, exist_ok=True)
    reuse_map = os.path.join(args.out, "head-map-8b-quest-reselect8.json")
    with open(reuse_map, "w") as f:
        json.dump({"streaming": [[False] * 8 for _ in range(32)], "token_budget": 4096, "reselect_every": 8}, f)
    variants = {("triton", None, "auto"): [("triton", None)], ("sparse", None, "auto"): [("sparse", None)],
                ("sparse", reuse_map, "auto"): [("sparse-reselect8", None)],
                ("triton", None, "fp8"): [("triton-fp8", None)], ("sparse", None, "fp8"): [("sparse-fp8", None)]}
    for (backend, head_map, kv_dtype), runs in variants.items():
        eng = LLMEngine(EngineConfig(model=path, device="cuda", attention_backend=backend, max_model_len=L + 512,
                                     max_num_batched_tokens=8192, max_num_seqs=8, gpu_memory_utilization=0.85,
                                     cuda_graph_max_batch=8, sparse_head_map=head_map, kv_dtype=kv_dtype))
        for label, attn in runs:
            r = []
            for k in range(2):
                eng.add_request(f"{label}{k}", prompt, SamplingParams(max_tokens=n, ignore_eos=True), attention=attn)
                t_first, got = None, 0
                while eng.has_unfinished():
                    for o in eng.step():
                        got += len(o.new_token_ids)
                        if o.new_token_ids and t_first is None:
                            torch.cuda.synchronize()
                            t_first, got = time.perf_counter(), got - len(o.new_token_ids)
                torch.cuda.synchronize()
                r.append(got / (time.perf_counter() - t_first))
            rates[label] = sorted(r)[-1]
        del eng
        gc.collect()
        torch.cuda.empty_cache()
    for label, what, peer in (("sparse", "sparse=quest4096", "triton"),
                              ("sparse-reselect8", "sparse=quest4096,reselect_every=8", "triton"),
                              ("triton-fp8", "kv=fp8", "triton"), ("sparse-fp8", "sparse=quest4096,kv=fp8", "triton-fp8")):
        metric(f"decode_tok_s[engine,8B-shape,B=1,L={L},{what}]", rates[label], "tok/s", "higher",
               peer=(f"same engine, dense Triton attention{', fp8 KV' if 'fp8' in peer else ''}", rates[peer]),
               note="random Llama-3.1-8B-shape weights, bf16 linears, CUDA graphs; best of two runs; "
                    f"{n} tokens after a {L}-token prompt; dense bf16 KV {rates['triton']:.1f} tok/s")


def e2e_ring():
    """streaming_kv='ring' vs 'full' in the engine, same head map (half the kv heads of every layer
    streaming, sink 128 + window 4096; Quest budget 4096 for the retrieval heads), 8B shape (random
    weights) at 32K, B = 1, CUDA graphs: decode tok/s, paged-KV bytes per token, KV blocks
    allocated from the same memory budget, and the rings' bytes. --smoke: tiny shape on CPU (torch
    path), to check the script only."""
    import gc

    from edgeserve_pod.config import EngineConfig
    from edgeserve_pod.engine.engine import LLMEngine
    from edgeserve_pod.engine.sequence import SamplingParams
    from edgeserve_pod.tools.random_checkpoint import SHAPES, write_random_checkpoint

    if CPU_ONLY:
        shape, L, n, sink, window, budget = "tiny", 480, 16, 16, 64, 128
        path = write_random_checkpoint(shape, "/tmp/ring-bench-tiny", seed=0, dtype=torch.float32)
        kw = dict(device="cpu", max_num_batched_tokens=256, max_num_seqs=4)
    else:
        shape, L, n, sink, window, budget = "llama-3.1-8b", 32768, 128, 128, 4096, 4096
        path = write_random_checkpoint(shape, "/tmp/llama-3.1-8b", seed=0, device="cuda")
        kw = dict(device="cuda", max_num_batched_tokens=8192, max_num_seqs=8, gpu_memory_utilization=0.85,
                  cuda_graph_max_batch=8)
    sh = SHAPES[shape]
    layers, hkv = sh["num_hidden_layers"], sh["num_key_value_heads"]
    d = sh.get("head_dim", sh["hidden_size"] // sh["num_attention_heads"])
    os.makedirs(args.out, exist_ok=True)
    head_map = os.path.join(args.out, f"head-map-{shape}-stream50.json")
    with open(head_map, "w") as f:  # a random model has no heads to find: every other kv head streams
        json.dump({"streaming": [[h % 2 == 0 for h in range(hkv)] for _ in range(layers)], "sink_tokens": sink,
                   "window_tokens": window, "token_budget": budget}, f)
    prompt = torch.randint(0, min(sh["vocab_size"], 128000), (L,), generator=torch.Generator().manual_seed(1)).tolist()
    sync = torch.cuda.synchronize if not CPU_ONLY else (lambda: None)
    res = {}
    for mode in ("full", "ring"):
        eng = LLMEngine(EngineConfig(model=path, attention_backend="sparse", sparse_head_map=head_map, streaming_kv=mode,
                                     max_model_len=L + 512, enable_prefix_caching=False, **kw))
        r = []
        for k in range(2):
            eng.add_request(f"{mode}{k}", prompt, SamplingParams(max_tokens=n, ignore_eos=True))
            t_first, got = None, 0
            while eng.has_unfinished():
                for o in eng.step():
                    got += len(o.new_token_ids)
                    if o.new_token_ids and t_first is None:
                        sync()
                        t_first, got = time.perf_counter(), got - len(o.new_token_ids)
            sync()
            r.append(got / (time.perf_counter() - t_first))
        ru = eng.runner
        res[mode] = dict(rate=max(r), blocks=ru.num_blocks, per_token=ru.block_bytes() / ru.block_size,
                         ring=ru.ring_bytes(), weights=sum(t.numel() * t.element_size() for t in ru.model.state_dict().values()),
                         elem=torch.empty(0, dtype=ru.kv_dtype).element_size())
        print(f"  {mode}: {res[mode]}", flush=True)
        del eng, ru
        gc.collect()
        if not CPU_ONLY:
            torch.cuda.empty_cache()
    f, g = res["full"], res["ring"]
    # bytes one decode step must read at least: the weights, the retrieval heads' Quest pages and the
    # streaming heads' sink + window (the same logical pages in both modes)
    kv_read = layers * (hkv // 2) * (min(budget, L) + sink + window) * d * 2 * g["elem"]
    limit = BW / (g["weights"] + kv_read)
    case = f"engine,{shape}-shape,B=1,L={L},sparse=quest{budget}+stream50(sink{sink},window{window})"
    metric(f"decode_tok_s[{case},kv=ring]", g["rate"], "tok/s", "higher",
           peer=("same engine and head map, streaming_kv=full", f["rate"]),
           limit=(limit, "copy bandwidth / (weight bytes + selected KV bytes per step)"),
           note=f"{n} tokens after a {L}-token prompt, best of two; random weights")
    metric(f"kv_bytes_per_token[{case},kv=ring]", g["per_token"], "B", "lower",
           peer=("streaming_kv=full", f["per_token"]),
           limit=(f["per_token"] / 2, "retrieval heads only: half the kv heads"),
           note=f"plus rings: {g['ring'] / 2**20:.1f} MiB for max_num_seqs + 1 slots, independent of max_model_len")
    metric(f"kv_blocks[{case},kv=ring]", g["blocks"], "blocks", "higher", peer=("streaming_kv=full", f["blocks"]),
           note=f"from the same gpu_memory_utilization (CPU: a fixed count); rings take {g['ring'] / 2**20:.1f} MiB first")


# passkey accuracy (dense vs sparse through the engine) moved to bench/passkey.py


for part in args.only.split(","):
    section({"decode": decode, "fp8": fp8, "prefill": prefill, "prefix_prefill": prefix_prefill, "e2e": e2e,
             "e2e_ring": e2e_ring, "prefill_check": prefill_check}[part])
print("done", flush=True)
