"""Driver for ncu: paged_decode at (B, L) with the engine launch, bf16 KV then fp8 KV, three calls each
with a 256 MiB write between them (cold L2). Used for bench/results/quant/2026-11-23-h100-decode-ncu_*.log:
    ncu --kernel-name regex:_decode_split --launch-skip 2 --launch-count 1 --section ... python bench/kv_decode_ncu_driver.py 1 131072
(--launch-skip 5 profiles the fp8 kernel)."""
import os
import sys

import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))
from edgeserve_pod.kernels.paged_attention import FP8, paged_decode
B, L, H, HKV, D, BS = int(sys.argv[1]), int(sys.argv[2]), 32, 8, 128, 16
nb = B * L // BS
q = torch.randn(B, H, D, device="cuda", dtype=torch.bfloat16)
ctx = torch.full((B,), L, dtype=torch.int32, device="cuda")
table = torch.randperm(nb, device="cuda").view(B, L // BS).to(torch.int32)
k = torch.randn(nb, BS, HKV, D, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
ks = k.float().abs().amax((0, 1, 3)) / 448; vs = v.float().abs().amax((0, 1, 3)) / 448
k8 = (k.float() / ks[None, None, :, None]).to(FP8); v8 = (v.float() / vs[None, None, :, None]).to(FP8)
flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
for fp8 in (False, True):
    for _ in range(3):
        flush.zero_()
        if fp8:
            paged_decode(q, k8, v8, table, ctx, D ** -0.5, ks, vs)
        else:
            paged_decode(q, k, v, table, ctx, D ** -0.5)
torch.cuda.synchronize()
