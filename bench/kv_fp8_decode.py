"""FP8 KV decode attention with the L2 cold, as in a real decode step (issue 7: fp8 >= 1.8x bf16 KV
at L >= 8K).

bench/sparse_attention.py --only fp8 times one paged_decode call replayed on the same cache. At
L = 8K the whole cache (33.5 MB bf16, 16.8 MB fp8) stays in the H100's 50 MB L2 between replays,
so neither dtype reads HBM and both take the same ~28 us. In the engine, a decode step runs 32
layers, each over its own cache, so a layer's KV is never in L2 when its attention starts. Here
each timed graph calls the kernel R times over R different caches (R caches > 2x L2), like
consecutive layers, and the figure is replay time / R (bench_common.graph_time_us).

Both dtypes get the same config search (block_n, warps, stages, split multiplier); SDPA (bf16,
contiguous KV, GQA) runs cold the same way as the peer of the bf16 figure. Every variant's output
is checked against a float32 reference on the (dequantized) cache first.

    python bench/kv_fp8_decode.py --out DIR [--commit SHA]
Writes DIR/kv_fp8_decode.json (BENCH.md format, topic quant).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))
from bench_common import copies_for, copy_bandwidth, graph_time_us  # noqa: E402

from edgeserve_pod.kernels.paged_attention import FP8, decode_num_splits, paged_decode  # noqa: E402

H, HKV, D, BS = 32, 8, 128, 16
SCALE = D ** -0.5
CASES = [(1, 8192), (1, 32768), (1, 131072), (8, 32768)]
# (block_n, warps, stages, split multiplier): the decode configs of sparse_attention.py plus more
# splits (short contexts have few tiles per kv head) and the double-buffered stage counts
CFGS = [(64, 4, 2, 1), (128, 4, 2, 1), (64, 4, 3, 2), (128, 8, 3, 1), (32, 4, 2, 2), (64, 4, 5, 1),
        (64, 4, 5, 2), (32, 4, 3, 4), (64, 4, 2, 4), (128, 4, 5, 1), (128, 4, 4, 1), (128, 8, 5, 1),
        (128, 4, 6, 1), (256, 8, 3, 1), (128, 4, 5, 2), (64, 8, 5, 1), (64, 8, 6, 1), (128, 8, 6, 1),
        (32, 4, 6, 1), (64, 4, 6, 1), (128, 4, 6, 2), (64, 4, 3, 4), (128, 4, 3, 4), (64, 8, 3, 4),
        # one wave when a CTA fills an SM (half the splits), and 1.5 waves
        (128, 4, 5, 0.5), (128, 4, 6, 0.5), (128, 8, 6, 0.5), (256, 8, 3, 0.5), (128, 8, 4, 0.5), (128, 4, 6, 1.5)]
# Physical cache layouts, both passed to the kernel as (num_blocks, BS, Hkv, D) tensors: "nhd" is the
# engine's (a token's heads side by side: one kv head's page is BS rows of D elements, Hkv * D
# apart), "hnd" stores each kv head's page contiguously ((num_blocks, Hkv, BS, D), a transposed view)


def ref(q, k, v):  # q (B, H, D); k, v (B, Hkv, L, D) float32
    kf, vf = k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1)
    s = (q.float()[:, :, None] @ kf.transpose(-1, -2)) * SCALE
    return (s.softmax(-1) @ vf)[:, :, 0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--layouts", default="nhd,hnd")
    ap.add_argument("--quick", action="store_true", help="no config sweep: the engine's launch only")
    args = ap.parse_args()
    if args.quick:
        CFGS.clear()
    layouts = args.layouts.split(",")
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    bw = copy_bandwidth()
    print(f"{dev}: copy {bw / 1e12:.2f} TB/s", flush=True)
    metrics = []
    for B, L in CASES:
        for layout in layouts:
            metrics.extend(one_case(B, L, layout, bw, sms))
            write(args, dev, bw, metrics)


def one_case(B, L, layout, bw, sms):
    """Best config per KV dtype for one (B, L) in one physical layout; returns its metrics."""
    nb = B * L // BS
    kv16 = 2 * B * L * HKV * D * 2
    r16, r8 = copies_for(kv16), copies_for(kv16 // 2)
    q = torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16)
    ctx = torch.full((B,), L, dtype=torch.int32, device="cuda")
    table = torch.randperm(nb, device="cuda").view(B, L // BS).to(torch.int32)
    phys = (nb, BS, HKV, D) if layout == "nhd" else (nb, HKV, BS, D)

    def view(t):  # physical tensor -> (nb, BS, Hkv, D)
        return t if layout == "nhd" else t.transpose(1, 2)

    caches16, caches8 = [], []
    for i in range(max(r16, r8)):
        k = torch.randn(phys, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        if i < r16:
            caches16.append((view(k), view(v)))
        if i < r8:
            ks, vs = (view(t).float().abs().amax((0, 1, 3)) / 448 for t in (k, v))
            hd = (None, None, slice(None), None) if layout == "nhd" else (None, slice(None), None, None)
            caches8.append((view((k.float() / ks[hd]).to(FP8)), view((v.float() / vs[hd]).to(FP8)), ks, vs))
        del k, v

    def call(cache, cfg, fp8):  # cfg None: what the engine launches (paged_decode's own choice)
        bn, warps, stages, mult = cfg or (None, None, None, None)
        ns = None if cfg is None else max(1, round(decode_num_splits(B, HKV, L, bn, sms) * mult))
        if fp8:
            kq, vq, ks, vs = cache
            return paged_decode(q, kq, vq, table, ctx, SCALE, ks, vs, num_splits=ns, block_n=bn, num_warps=warps, num_stages=stages)
        return paged_decode(q, cache[0], cache[1], table, ctx, SCALE, num_splits=ns, block_n=bn, num_warps=warps, num_stages=stages)

    def contiguous(c):  # (nb, BS, Hkv, D) view -> (B, Hkv, L, D) float32
        return c[table.long()].reshape(B, L, HKV, D).transpose(1, 2).float()

    ref16 = ref(q, contiguous(caches16[0][0]), contiguous(caches16[0][1]))
    kq, vq, ks, vs = caches8[0]
    ref8 = ref(q, contiguous(kq) * ks[None, :, None, None], contiguous(vq) * vs[None, :, None, None])
    best = {}
    for fp8, caches, rf in ((False, caches16, ref16), (True, caches8, ref8)):
        for cfg in CFGS:
            try:
                err = (call(caches[0], cfg, fp8).float() - rf).abs().max().item()
                if not err < 2e-2:
                    print(f"  B={B} L={L} {layout} {'fp8' if fp8 else 'bf16'} {cfg}: rejected, max err {err:.2e}", flush=True)
                    continue
                t = graph_time_us([lambda c=c: call(c, cfg, fp8) for c in caches])
            except Exception as e:  # a config that does not compile (resources) is skipped, and said so
                print(f"  B={B} L={L} {layout} {cfg} failed: {repr(e)[:120]}", flush=True)
                continue
            print(f"  B={B} L={L} {layout} {'fp8 ' if fp8 else 'bf16'} {cfg}: {t:7.1f} us (err {err:.1e})", flush=True)
            if fp8 not in best or t < best[fp8][0]:
                best[fp8] = (t, cfg, err)
    engine = {fp8: graph_time_us([lambda c=c: call(c, None, fp8) for c in caches])
              for fp8, caches in ((False, caches16), (True, caches8))}
    for fp8, caches, rf in ((False, caches16, ref16), (True, caches8, ref8)):  # --quick: the engine's launch
        if fp8 not in best:
            best[fp8] = (engine[fp8], None, (call(caches[0], None, fp8).float() - rf).abs().max().item())
    # SDPA, bf16, contiguous KV, GQA, the same cold-L2 replay
    cont = [(contiguous(k).to(torch.bfloat16), contiguous(v).to(torch.bfloat16)) for k, v in caches16]
    qs = q[:, :, None]
    t_sdpa = graph_time_us([lambda kv=kv: F.scaled_dot_product_attention(qs, kv[0], kv[1], scale=SCALE, enable_gqa=True)
                            for kv in cont])
    del cont, caches16, caches8
    torch.cuda.empty_cache()
    t16, cfg16, e16 = best[False]
    t8, cfg8, e8 = best[True]
    lim8, lim16 = kv16 / 2 / bw * 1e6, kv16 / bw * 1e6
    print(f"B={B} L={L} {layout}: fp8 {t8:.1f} us ({cfg8}) | bf16 {t16:.1f} us ({cfg16}) | speed-up {t16 / t8:.2f}x | "
          f"SDPA {t_sdpa:.1f} | limits {lim8:.1f} / {lim16:.1f} us | copies {r8}/{r16} | engine's launch: "
          f"fp8 {engine[True]:.1f} us, bf16 {engine[False]:.1f} us ({engine[False] / engine[True]:.2f}x)", flush=True)
    cond = f"B={B},L={L},page={BS},layout={layout},cold L2"
    return [{"name": f"decode_attention_us[dense,kv=fp8,{cond}]", "value": round(t8, 2), "unit": "us",
             "better": "lower", "peer": {"name": "ours dense, bf16 KV, same layout, same replay", "value": round(t16, 2)},
             "limit": {"value": round(lim8, 2), "how": "fp8 K+V bytes / measured copy bandwidth"},
             "target": {"value": round(t16 / 1.8, 2), "source": "issue 7: fp8 >= 1.8x bf16 KV at L >= 8K"},
             "extra": {"cfg_fp8": cfg8, "cfg_bf16": cfg16, "max_abs_err_vs_f32": [e8, e16],
                       "sdpa_bf16_us": round(t_sdpa, 2), "bf16_limit_us": round(lim16, 2), "copies": [r8, r16],
                       "engine_launch_us": {"fp8": round(engine[True], 2), "bf16": round(engine[False], 2),
                                            "speedup": round(engine[False] / engine[True], 3),
                                            "how": "paged_decode with no config given (decode_launch, decode_num_splits)"}}},
            {"name": f"fp8_kv_speedup[dense,{cond}]", "value": round(t16 / t8, 3), "unit": "x", "better": "higher",
             "target": {"value": 1.8, "source": "issue 7"}}]


def write(args, dev, bw, metrics):
    doc = {"topic": "quant", "device": dev, "commit": args.commit, "command": "python bench/kv_fp8_decode.py",
           "date": datetime.date.today().isoformat(), "ceilings": {"copy_TBps": bw / 1e12},
           "timing": "CUDA graph of R calls over R caches (> 2x L2), median replay / R", "metrics": metrics}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "kv_fp8_decode.json"), "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
