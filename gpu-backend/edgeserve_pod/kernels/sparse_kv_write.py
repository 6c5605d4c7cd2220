"""One kernel for a decode step's KV write in the sparse backend: store k/v at their slots,
fold k into its block's Quest min/max, and bump the block's generation when the token starts
the block (row 0). The unfused path (kv_write.write_kv, quest.update_page_minmax, an index_add)
is ~13 small kernels per layer, which at batch 1 cost more than Quest saved.

Decode steps only: each token writes a different block (a sequence's own last block), so the
per-block read-modify-write has no races. Prefill (many tokens per block) keeps the unfused path.
FP8 caches: the stored value is kv_write.py's, (x / scale) clamped to +-448 then rounded to e4m3,
with the per-kv-head scales already set (the runner's start-up calibration); the min/max fold the
unquantized keys, as update_page_minmax does.
Reference: the unfused path; tests/kernels/test_sparse_kv_write.py compares them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_minmax_kernel(K, V, KC, VC, KMin, KMax, Gen, Slots, KS, VS, stride_kt, stride_vt, stride_slot,
                            stride_mb, NKV, BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr,
                            HAS_GEN: tl.constexpr, IS_FP8: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(Slots + t)
    blk = slot // BLOCK_SIZE
    fresh = (slot % BLOCK_SIZE) == 0
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HEAD_DIM)
    mask = (h < NKV)[:, None]
    hd = h[:, None] * HEAD_DIM + d[None, :]
    k = tl.load(K + t * stride_kt + hd, mask=mask, other=0.0)
    v = tl.load(V + t * stride_vt + hd, mask=mask, other=0.0)
    if IS_FP8:
        sk = tl.load(KS + h, mask=h < NKV, other=1.0)[:, None]
        sv = tl.load(VS + h, mask=h < NKV, other=1.0)[:, None]
        kq = tl.minimum(tl.maximum(k.to(tl.float32) / sk, -448.0), 448.0)
        vq = tl.minimum(tl.maximum(v.to(tl.float32) / sv, -448.0), 448.0)
        tl.store(KC + slot * stride_slot + hd, kq.to(KC.dtype.element_ty), mask=mask)
        tl.store(VC + slot * stride_slot + hd, vq.to(VC.dtype.element_ty), mask=mask)
    else:
        tl.store(KC + slot * stride_slot + hd, k.to(KC.dtype.element_ty), mask=mask)
        tl.store(VC + slot * stride_slot + hd, v.to(VC.dtype.element_ty), mask=mask)
    km = k.to(KMin.dtype.element_ty)
    lo = tl.load(KMin + blk * stride_mb + hd, mask=mask, other=0.0)
    hi = tl.load(KMax + blk * stride_mb + hd, mask=mask, other=0.0)
    tl.store(KMin + blk * stride_mb + hd, tl.where(fresh, km, tl.minimum(lo, km)), mask=mask)
    tl.store(KMax + blk * stride_mb + hd, tl.where(fresh, km, tl.maximum(hi, km)), mask=mask)
    if HAS_GEN:
        g = tl.load(Gen + blk)
        tl.store(Gen + blk, g + fresh.to(tl.int32))


def write_kv_minmax_decode(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           slot_mapping: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                           blk_gen: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
                           v_scale: torch.Tensor | None = None) -> None:
    """k, v (T, Hkv, D), one token per block (a decode step); caches (num_blocks, BS, Hkv, D);
    kmin/kmax (num_blocks, Hkv, D); blk_gen (num_blocks,) int32 or None; k_scale/v_scale (Hkv,)
    float32, set (> 0), for an fp8 cache."""
    T, Hkv, D = k.shape
    if T == 0:
        return
    if k.stride(2) != 1 or v.stride(2) != 1 or k.stride(1) != D or v.stride(1) != D:
        raise ValueError("k/v must be (T, Hkv, D) with contiguous heads")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and kmin.is_contiguous() and kmax.is_contiguous()):
        raise ValueError("caches and min/max must be contiguous")
    is_fp8 = k_cache.dtype == torch.float8_e4m3fn
    if is_fp8 and (k_scale is None or v_scale is None):
        raise ValueError("an fp8 cache needs k_scale and v_scale (set by the start-up calibration)")
    _write_kv_minmax_kernel[(T,)](k, v, k_cache, v_cache, kmin, kmax, blk_gen if blk_gen is not None else slot_mapping,
                                  slot_mapping, k_scale if is_fp8 else kmin, v_scale if is_fp8 else kmin,
                                  k.stride(0), v.stride(0), Hkv * D, Hkv * D, Hkv,
                                  BLOCK_SIZE=k_cache.shape[1], BLOCK_H=triton.next_power_of_2(Hkv), HEAD_DIM=D,
                                  HAS_GEN=blk_gen is not None, IS_FP8=is_fp8)
