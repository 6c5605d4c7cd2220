"""Fused elementwise Triton kernels for the decoder layer: residual add + RMSNorm, rotary in
place on q|k, SiLU(gate) * up.

Why: a decode step of a 1B model in a CUDA graph was ~40 small torch kernels per layer; at a few
microseconds each they cost as much as reading the weights. These three kernels make it ~12.
Numerics follow HF Llama (the torch references in layers/rmsnorm.py, layers/rotary.py,
layers/activation.py): norm in float32, products in the activation dtype.
Tests: tests/test_fused_elementwise.py against those references (interpreter mode on CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rmsnorm_kernel(X, R, W, Y, D, eps, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < D
    x = tl.load(X + row * D + offs, mask=mask, other=0.0)
    if HAS_RES:
        x = (x + tl.load(R + row * D + offs, mask=mask, other=0.0)).to(X.dtype.element_ty)
        tl.store(R + row * D + offs, x, mask=mask)  # the residual stream, updated in place
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, axis=0) / D
    y = (xf * tl.rsqrt(var + eps)).to(X.dtype.element_ty)
    w = tl.load(W + offs, mask=mask, other=0.0)
    tl.store(Y + row * D + offs, (y * w).to(Y.dtype.element_ty), mask=mask)


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x, residual: (T, D) contiguous, same dtype; residual += x in place (if given), returns
    RMSNorm(residual or x) * weight as a new (T, D) tensor."""
    T, D = x.shape
    assert x.is_contiguous() and (residual is None or (residual.is_contiguous() and residual.shape == x.shape))
    y = torch.empty_like(x)
    if T:
        _add_rmsnorm_kernel[(T,)](x, residual if residual is not None else x, weight, y, D, eps,
                                  HAS_RES=residual is not None, BLOCK=triton.next_power_of_2(D))
    return y


@triton.jit
def _rope_kernel(QK, POS, COS, SIN, stride_t, NH, SLOT, KC, VC, KS, VS, stride_slot, NQ, NKV,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, WRITE_KV: tl.constexpr, BLOCK_KV: tl.constexpr,
                 FP8: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    p = tl.load(POS + t)
    j = tl.arange(0, HALF)
    h = tl.arange(0, BLOCK_H)
    dt = QK.dtype.element_ty
    c = tl.load(COS + p * HALF + j).to(dt).to(tl.float32)  # HF casts cos/sin to the activation dtype
    s = tl.load(SIN + p * HALF + j).to(dt).to(tl.float32)
    mask = (h < NH)[:, None]
    ptr = QK + t * stride_t + h[:, None] * (2 * HALF) + j[None, :]
    x1 = tl.load(ptr, mask=mask, other=0.0)
    x2 = tl.load(ptr + HALF, mask=mask, other=0.0)
    # rotate-half: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s), each product rounded like HF's
    o1 = ((x1 * c.to(dt)).to(tl.float32) - (x2 * s.to(dt)).to(tl.float32)).to(dt)
    o2 = ((x2 * c.to(dt)).to(tl.float32) + (x1 * s.to(dt)).to(tl.float32)).to(dt)
    tl.store(ptr, o1, mask=mask)
    tl.store(ptr + HALF, o2, mask=mask)
    if WRITE_KV:
        # heads NQ .. NH-1 are k: store them, rotated, and the v heads behind them at the slot
        slot = tl.load(SLOT + t)
        kmask = ((h >= NQ) & (h < NH))[:, None]
        kptr = KC + slot * stride_slot + (h - NQ)[:, None] * (2 * HALF) + j[None, :]
        hv = tl.arange(0, BLOCK_KV)
        jj = tl.arange(0, 2 * HALF)
        vmask = (hv < NKV)[:, None]
        v = tl.load(QK + t * stride_t + (NH + hv)[:, None] * (2 * HALF) + jj[None, :], mask=vmask, other=0.0)
        if FP8:  # e4m3 with the per-kv-head scales set at start-up: value / scale, saturated
            ks = tl.load(KS + (h - NQ), mask=h >= NQ, other=1.0)[:, None]
            vs = tl.load(VS + hv, mask=hv < NKV, other=1.0)[:, None]
            k1 = tl.clamp(o1.to(tl.float32) / ks, -448.0, 448.0)
            k2 = tl.clamp(o2.to(tl.float32) / ks, -448.0, 448.0)
            v = tl.clamp(v.to(tl.float32) / vs, -448.0, 448.0)
        else:
            k1, k2 = o1, o2
        tl.store(kptr, k1.to(KC.dtype.element_ty), mask=kmask)
        tl.store(kptr + HALF, k2.to(KC.dtype.element_ty), mask=kmask)
        tl.store(VC + slot * stride_slot + hv[:, None] * (2 * HALF) + jj[None, :], v.to(VC.dtype.element_ty), mask=vmask)


def rope_inplace(qk: torch.Tensor, positions: torch.Tensor, cos_half: torch.Tensor, sin_half: torch.Tensor,
                 num_heads: int, head_dim: int, kv_write: tuple | None = None) -> None:
    """qk: (T, >= num_heads * head_dim) rows (a view into q|k|v is fine; last dim contiguous);
    the first num_heads heads are rotated in place. cos_half/sin_half: (max_pos, head_dim/2) f32.

    kv_write = (num_q, k_cache, v_cache, slot_mapping[, k_scale, v_scale]): the same kernel also
    stores the rotated k heads (num_q .. num_heads-1) and the v heads that follow them in the row
    into the paged caches (num_blocks, block_size, Hkv, head_dim) at slot_mapping (T,) — the KV
    write of a decoder layer without two more kernels. FP8 (e4m3) caches need the per-kv-head
    float32 scales, already set (kv_write.py's first-write calibration stays unfused)."""
    T = qk.shape[0]
    assert qk.stride(-1) == 1 and head_dim % 2 == 0
    if not T:
        return
    if kv_write is None:
        _rope_kernel[(T,)](qk, positions, cos_half, sin_half, qk.stride(0), num_heads, positions, qk, qk, cos_half,
                           cos_half, 0, 0, 0, HALF=head_dim // 2, BLOCK_H=triton.next_power_of_2(num_heads),
                           WRITE_KV=False, BLOCK_KV=1, FP8=False)
        return
    num_q, k_cache, v_cache, slots, *scales = kv_write
    nkv = num_heads - num_q
    assert k_cache.shape == v_cache.shape and k_cache.shape[-2:] == (nkv, head_dim) and k_cache.is_contiguous()
    assert qk.shape[1] >= (num_heads + nkv) * head_dim
    fp8 = k_cache.dtype == torch.float8_e4m3fn
    if fp8 and (len(scales) != 2 or any(x is None for x in scales)):
        raise ValueError("an fp8 KV cache needs (k_scale, v_scale) in kv_write")
    ks, vs = scales if fp8 else (cos_half, cos_half)
    _rope_kernel[(T,)](qk, positions, cos_half, sin_half, qk.stride(0), num_heads, slots, k_cache, v_cache, ks, vs,
                       nkv * head_dim, num_q, nkv, HALF=head_dim // 2, BLOCK_H=triton.next_power_of_2(num_heads),
                       WRITE_KV=True, BLOCK_KV=triton.next_power_of_2(nkv), FP8=fp8)


@triton.jit
def _silu_mul_kernel(GU, Y, I, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < I
    g = tl.load(GU + row * 2 * I + offs, mask=mask, other=0.0)
    u = tl.load(GU + row * 2 * I + I + offs, mask=mask, other=0.0)
    gf = g.to(tl.float32)
    a = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
    tl.store(Y + row * I + offs, a * u, mask=mask)


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """gu: (T, 2I) = [gate | up] contiguous -> SiLU(gate) * up, (T, I)."""
    T, I2 = gu.shape
    assert gu.is_contiguous() and I2 % 2 == 0
    y = torch.empty(T, I2 // 2, dtype=gu.dtype, device=gu.device)
    if T:
        BLOCK = 1024
        _silu_mul_kernel[(T, triton.cdiv(I2 // 2, BLOCK))](gu, y, I2 // 2, BLOCK=BLOCK)
    return y
