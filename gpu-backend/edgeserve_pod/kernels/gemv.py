"""bf16 GEMV for decode batches (M = 1..4): y = a @ W^T (+ bias) (+ residual), W (N, K) row-major
(nn.Linear's layout), with the neighbouring elementwise kernels of a decoder layer fused in.

Why: at batch 1 a decode step is weight-bandwidth bound; cuBLAS reaches only 1.6-2.7 TB/s on the
1B model's GEMVs (copy rate ~3 TB/s), and every add_rmsnorm / silu_mul kernel between them costs
a launch gap. The fusions the decoder layer needs:
    qkv      = gemv(rmsnorm(r))              prologue "rmsnorm"
    r'       = r + gemv(attn_out)            epilogue residual
    gate_up  = gemv(rmsnorm(r'))             prologue "rmsnorm"
    r''      = r' + gemv(silu(g) * u)        prologue "silu_mul" + epilogue residual
    logits   = gemv(rmsnorm(r_final))        prologue "rmsnorm" (lm_head)

Design: one program per BLOCK_N output columns, all M rows; it streams its (BLOCK_N, K) slab of W
once, BLOCK_K at a time (contiguous along K: 16-byte vector loads), so W is read exactly once
over the grid. No split-K: N / BLOCK_N programs with a small BLOCK_N (2..32) already give several
programs per SM for every Llama shape, and split-K would need a second kernel or a workspace.
Each program builds the activation tile itself (the prologue): rmsnorm needs a first pass over
the row for the sum of squares, so r is read twice per program; r (<= 16 KB per row) stays in L2.
Bytes in flight: with num_stages > 1 Triton pipelines the K loop's loads through shared memory
(cp.async, num_stages tiles ahead); with num_stages == 1 they are plain 16-byte register loads
with L2 hints (W evict_first: touched once; the activation evict_last: every program reads it).
The sweep picks per shape. With M == 1 the partial products may be kept as a (BLOCK_N, BLOCK_K) fp32 tile
and summed along K once at the end (DEFER), which saves the per-iteration cross-lane reduction.

Numerics are those of the unfused torch chain (layers/rmsnorm.py RMSNorm.reference,
layers/activation.py silu_and_mul_reference, then F.linear, then + residual):
    rmsnorm:  (r_f32 * rsqrt(mean(r_f32^2) + eps)).to(bf16) * norm_weight    (product in bf16)
    silu_mul: silu(g_f32).to(bf16) * u                                        (product in bf16)
    dot in fp32, + bias in fp32, rounded to bf16, then + residual rounded to bf16.
`gemv_reference` is that chain in torch (float32 dot), used by the tests and on CPU.

Config: CONFIGS[(N, K)] from bench/gemv_sweep.py (H100, CUDA-graph replay); other shapes get
`default_config`. Tests: tests/kernels/test_gemv.py. Bench: bench/gemv_sweep.py.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install: the reference path still works
    triton = None

PROLOGUES = (None, "rmsnorm", "silu_mul")
MAX_M = 4


def _cfg(bn, bk, warps, stages, defer=False, prefetch=False):
    """prefetch (num_stages 1 only): double-buffer W in registers, the first tile issued before
    the rmsnorm pass. Off in every config measured before it existed."""
    cfg = {"BLOCK_N": bn, "BLOCK_K": bk, "DEFER": defer, "num_warps": warps, "num_stages": stages}
    if prefetch:
        cfg["PREFETCH"] = True
    return cfg


# (N, K) -> the fastest config of bench/gemv_sweep.py that passed its correctness check
# (H100, M = 1, cold L2; bench/results/pod-engine/2026-11-22-nvidia-h100-gemv-sweep.json, and
# -sweep2.json where a second sweep's winner beat the first one's config re-timed in that run).
CONFIGS: dict[tuple[int, int], dict] = {
    (3072, 2048): _cfg(4, 1024, 8, 1, defer=False),  # 7.70 us
    (2048, 2048): _cfg(4, 1024, 4, 1, defer=True),  # 5.25 us
    (16384, 2048): _cfg(2, 1024, 4, 1, defer=False),  # 25.16 us (second sweep; first winner 25.88 there)
    (2048, 8192): _cfg(4, 1024, 8, 1, defer=True),  # 14.07 / 14.54 us (second sweep, same config)
    (128256, 2048): _cfg(2, 1024, 4, 1, defer=False),  # 169.79 us
    (6144, 4096): _cfg(2, 1024, 4, 1, defer=True, prefetch=True),  # 20.26 us (second sweep; first winner 21.42 there)
    (4096, 4096): _cfg(2, 1024, 4, 1, defer=False),  # 13.59 us; 13.78 in the second sweep
    (28672, 4096): _cfg(8, 1024, 8, 1, defer=False),  # 79.42 us
    (4096, 14336): _cfg(16, 512, 4, 3, defer=True),  # 43.46 us
    (128256, 4096): _cfg(2, 1024, 4, 1, defer=True),  # 338.08 us
}


def default_config(n: int, k: int, num_sms: int = 132) -> dict:
    """No sweep result for (N, K): the widest BLOCK_N (<= 16) that still gives >= 4 programs per
    SM, BLOCK_K 512, three cp.async stages (3 x 8 KB of W in flight per program at BLOCK_N 8)."""
    bn = 16
    while bn > 2 and -(-n // bn) < 4 * num_sms:
        bn //= 2
    bk = 512 if k >= 512 else max(16, triton.next_power_of_2(k) if triton else 512)
    return _cfg(bn, bk, 4, 3, defer=bn * bk <= 64 * 32 * 4)


def gemv_supported(m: int, k: int, n: int) -> bool:
    """Shapes this kernel serves: decode batches of 1..4 rows, any K, N >= 1; offsets stay int32
    except the W row offset, which is int64."""
    return 1 <= m <= MAX_M and k >= 1 and n >= 1


def pick_config(n: int, k: int) -> dict:
    cfg = CONFIGS.get((n, k))
    return cfg if cfg is not None else default_config(n, k)


# ---------------------------------------------------------------- reference (torch)

def apply_prologue(x: torch.Tensor, prologue: str | None, norm_weight: torch.Tensor | None = None,
                   eps: float = 1e-6) -> torch.Tensor:
    """The activation the GEMV multiplies, in the model's dtype, rounded where torch rounds."""
    if prologue is None:
        return x
    if prologue == "rmsnorm":  # = RMSNorm.reference(x, None)[0]
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return norm_weight * xf.to(x.dtype)
    if prologue == "silu_mul":
        from edgeserve_pod.layers.activation import silu_and_mul_reference

        return silu_and_mul_reference(x)
    raise ValueError(f"prologue must be one of {PROLOGUES}, got {prologue!r}")


def gemv_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                   prologue: str | None = None, norm_weight: torch.Tensor | None = None, eps: float = 1e-6,
                   residual: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The unfused chain with a float32 dot: prologue -> a @ W^T (+ bias) -> round -> + residual.
    out_dtype=torch.float32 skips the roundings after the dot (the tests' exact reference)."""
    a = apply_prologue(x, prologue, norm_weight, eps)
    y = a.float() @ weight.float().t()
    if bias is not None:
        y = y + bias.float()
    dt = out_dtype or x.dtype
    y = y.to(dt)
    if residual is not None:
        y = (residual.to(dt) + y).to(dt) if dt != torch.float32 else residual.float() + y
    return y


# ---------------------------------------------------------------- kernel

if triton is not None:

    @triton.jit
    def _round(x, DT: tl.constexpr, RNE_BY_HAND: tl.constexpr):
        """fp32 -> DT, round to nearest even. The interpreter truncates fp32 -> bf16, so there
        (RNE_BY_HAND) the rounding is done on the bits first; on the GPU it is the plain cast."""
        if RNE_BY_HAND and DT == tl.bfloat16:
            b = x.to(tl.uint32, bitcast=True)
            b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
            x = b.to(tl.float32, bitcast=True)
        return x.to(DT)

    @triton.jit
    def _a_row(X, NW, row_off, offs_k, mask, rstd, K, PROLOGUE: tl.constexpr, RNE_BY_HAND: tl.constexpr):
        """One row of the activation tile, (BLOCK_K,) fp32, after the prologue."""
        if PROLOGUE == 2:  # silu(gate) * up, gu = [gate | up] of width 2K
            g = tl.load(X + row_off + offs_k, mask=mask, other=0.0, eviction_policy="evict_last")
            u = tl.load(X + row_off + K + offs_k, mask=mask, other=0.0, eviction_policy="evict_last")
            gf = g.to(tl.float32)
            s = _round(gf / (1.0 + tl.exp(-gf)), X.dtype.element_ty, RNE_BY_HAND)
            # a bf16 x bf16 product is exact in fp32: rounding it once is torch's bf16 multiply
            # (and the interpreter has no bf16 arithmetic)
            a = _round(s.to(tl.float32) * u.to(tl.float32), X.dtype.element_ty, RNE_BY_HAND)
        elif PROLOGUE == 1:  # rmsnorm: normalise in fp32, round, scale in the activation dtype
            r = tl.load(X + row_off + offs_k, mask=mask, other=0.0, eviction_policy="evict_last")
            nw = tl.load(NW + offs_k, mask=mask, other=0.0, eviction_policy="evict_last")
            rn = _round(r.to(tl.float32) * rstd, X.dtype.element_ty, RNE_BY_HAND)
            a = _round(rn.to(tl.float32) * nw.to(tl.float32), X.dtype.element_ty, RNE_BY_HAND)
        else:
            a = tl.load(X + row_off + offs_k, mask=mask, other=0.0, eviction_policy="evict_last")
        return a.to(tl.float32)

    @triton.jit
    def _w_tile(w_ptr, k0, K, offs_k0, ok, EVEN_K: tl.constexpr):
        """The (BLOCK_N, BLOCK_K) tile of W at k0 (zeros past K, or everywhere where not ok)."""
        if EVEN_K:
            return tl.load(w_ptr + k0, mask=ok, other=0.0, eviction_policy="evict_first")
        return tl.load(w_ptr + k0, mask=((k0 + offs_k0) < K)[None, :] & ok, other=0.0, eviction_policy="evict_first")

    @triton.jit
    def _gemv_kernel(
        X, W, B, RES, NW, Y,  # X (M, K or 2K), W (N, K), B (N,), RES (M, N), NW (K,), Y (M, N)
        M, N, K, stride_xm, stride_wn, stride_rm, stride_ym, eps,
        PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        EVEN_K: tl.constexpr, DEFER: tl.constexpr, STAGES: tl.constexpr, PREFETCH: tl.constexpr,
        RNE_BY_HAND: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_k0 = tl.arange(0, BLOCK_K)
        mask_n = offs_n < N
        # clamp the tail rows instead of masking them: the W loads keep one mask pattern along K
        w_ptr = W + tl.minimum(offs_n, N - 1).to(tl.int64)[:, None] * stride_wn + offs_k0[None, :]

        if PREFETCH:  # register double buffer: the first W tile is in flight during the rmsnorm pass
            w_next = _w_tile(w_ptr, 0, K, offs_k0, True, EVEN_K)

        # rmsnorm: per-row 1 / rms, a first pass over the row (it sits in L2 after the first program)
        rstd = tl.zeros((BLOCK_M,), dtype=tl.float32)
        if PROLOGUE == 1:
            for i in tl.static_range(BLOCK_M):
                ss = tl.zeros((BLOCK_K,), dtype=tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    offs_k = k0 + offs_k0
                    mk = (offs_k < K) & (i < M)
                    r = tl.load(X + i * stride_xm + offs_k, mask=mk, other=0.0, eviction_policy="evict_last")
                    r = r.to(tl.float32)
                    ss += r * r
                rstd = tl.where(offs_m == i, tl.rsqrt(tl.sum(ss, axis=0) / K + eps), rstd)

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_d = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        # STAGES > 1: Triton pipelines the loads through shared memory (cp.async), STAGES tiles
        # in flight per program; STAGES == 1: vector loads straight into registers, with PREFETCH
        # the next tile issued before this one is used (two tiles in flight)
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            offs_k = k0 + offs_k0
            if PREFETCH:
                w = w_next
                w_next = _w_tile(w_ptr, k0 + BLOCK_K, K, offs_k0, k0 + BLOCK_K < K, EVEN_K)
            elif EVEN_K:  # the loads the H100 sweep of 9405309 measured, unchanged
                w = tl.load(w_ptr + k0, eviction_policy="evict_first")
            else:
                w = tl.load(w_ptr + k0, mask=(offs_k < K)[None, :], other=0.0, eviction_policy="evict_first")
            w = w.to(tl.float32)
            for i in tl.static_range(BLOCK_M):
                mk = (offs_k < K) & (i < M)
                rstd_i = tl.sum(tl.where(offs_m == i, rstd, 0.0), axis=0)
                a = _a_row(X, NW, i * stride_xm, offs_k, mk, rstd_i, K, PROLOGUE, RNE_BY_HAND)
                if DEFER:  # BLOCK_M == 1 only (the host checks)
                    acc_d += w * a[None, :]
                else:
                    p = tl.sum(w * a[None, :], axis=1)  # (BLOCK_N,)
                    acc = tl.where(offs_m[:, None] == i, acc + p[None, :], acc)
        if DEFER:
            acc = tl.sum(acc_d, axis=1)[None, :] + acc

        if HAS_BIAS:
            acc += tl.load(B + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        y = _round(acc, Y.dtype.element_ty, RNE_BY_HAND)  # F.linear's rounding, before the residual add
        mask = (offs_m < M)[:, None] & mask_n[None, :]
        if HAS_RES:
            res = tl.load(RES + offs_m[:, None] * stride_rm + offs_n[None, :], mask=mask, other=0.0)
            y = _round(res.to(tl.float32) + y.to(tl.float32), Y.dtype.element_ty, RNE_BY_HAND)
        tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], y, mask=mask)


# ---------------------------------------------------------------- host wrapper

def _check(x, weight, bias, prologue, norm_weight, residual):
    if prologue not in PROLOGUES:
        raise ValueError(f"prologue must be one of {PROLOGUES}, got {prologue!r}")
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"expected x (M, K) and weight (N, K), got {tuple(x.shape)} and {tuple(weight.shape)}")
    m = x.shape[0]
    n, k = weight.shape
    want_cols = 2 * k if prologue == "silu_mul" else k
    if x.shape[1] != want_cols:
        raise ValueError(f"x must have {want_cols} columns for weight {tuple(weight.shape)} and prologue "
                         f"{prologue!r}, got {tuple(x.shape)}")
    if not gemv_supported(m, k, n):
        raise ValueError(f"gemv serves M in 1..{MAX_M}, got M={m}")
    if x.dtype != weight.dtype or x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"x and weight must share a float dtype, got {x.dtype} and {weight.dtype}")
    if x.stride(-1) != 1 or not weight.is_contiguous():
        raise ValueError("x needs a contiguous last dim and weight must be contiguous")
    if bias is not None and (bias.shape != (n,) or not bias.is_contiguous()):
        raise ValueError(f"bias must be contiguous ({n},), got {tuple(bias.shape)}")
    if prologue == "rmsnorm" and (norm_weight is None or norm_weight.shape != (k,) or not norm_weight.is_contiguous()
                                  or norm_weight.dtype != x.dtype):
        raise ValueError(f"prologue 'rmsnorm' needs a contiguous norm_weight ({k},) of {x.dtype}, got "
                         f"{None if norm_weight is None else (tuple(norm_weight.shape), norm_weight.dtype)}")
    if residual is not None and (residual.shape != (m, n) or residual.stride(-1) != 1 or residual.dtype != x.dtype):
        raise ValueError(f"residual must be ({m}, {n}) {x.dtype} with a contiguous last dim, got "
                         f"{tuple(residual.shape)} {residual.dtype}")


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, prologue: str | None = None,
         norm_weight: torch.Tensor | None = None, eps: float = 1e-6, residual: torch.Tensor | None = None,
         config: dict | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """y (M, N) = [residual +] prologue(x) @ weight^T [+ bias], a new tensor (or `out`, which must
    not be the residual: other programs still read it).

    x: (M, K), or (M, 2K) = [gate | up] for prologue "silu_mul"; weight (N, K); norm_weight (K,)
    for prologue "rmsnorm"; residual (M, N). M in 1..4. Off CUDA (and not under the Triton
    interpreter) this is `gemv_reference`."""
    _check(x, weight, bias, prologue, norm_weight, residual)
    m = x.shape[0]
    n, k = weight.shape
    if triton is None or (not x.is_cuda and not _interpreting()):
        return gemv_reference(x, weight, bias, prologue=prologue, norm_weight=norm_weight, eps=eps, residual=residual)
    cfg = dict(config or pick_config(n, k))
    block_m = triton.next_power_of_2(m)
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or not out.is_contiguous() or (residual is not None and out.data_ptr() == residual.data_ptr()):
        raise ValueError(f"out must be a new contiguous ({m}, {n}) tensor, not the residual")
    bk = cfg["BLOCK_K"]
    grid = (triton.cdiv(n, cfg["BLOCK_N"]),)
    dummy = weight
    _gemv_kernel[grid](
        x, weight, bias if bias is not None else dummy, residual if residual is not None else dummy,
        norm_weight if norm_weight is not None else dummy, out,
        m, n, k, x.stride(0), weight.stride(0), residual.stride(0) if residual is not None else 0, out.stride(0), eps,
        PROLOGUE=PROLOGUES.index(prologue), HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        BLOCK_M=block_m, BLOCK_N=cfg["BLOCK_N"], BLOCK_K=bk, EVEN_K=k % bk == 0,
        DEFER=bool(cfg.get("DEFER")) and block_m == 1, STAGES=cfg["num_stages"],
        PREFETCH=bool(cfg.get("PREFETCH")) and cfg["num_stages"] == 1, RNE_BY_HAND=not x.is_cuda,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"
