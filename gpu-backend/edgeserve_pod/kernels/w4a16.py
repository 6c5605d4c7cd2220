"""W4A16 GEMM: y = x @ dequant(W)^T with 4-bit group-quantized weights and 16-bit activations.

Weight format (the kernel's layout, produced once at quantization time by `pack_int4`):
    qweight: (K // 8, N) int32   eight 4-bit codes of one output column n, k = 8*r + j at bits 4j
    scales:  (ceil(K / G), N) float16
    zeros:   (ceil(K / G), N) uint8   integer zero point in [0, 15]
    w[n, k] = (q[k, n] - zeros[k // G, n]) * scales[k // G, n]

Rows along K sit in 32-bit words so that one coalesced load along N brings eight K values of
each column; the scale is constant inside a group, so the kernel accumulates
dot(x, q - z) over a K tile (exact small integers in the activation dtype) and multiplies by
the scale once per tile in fp32 instead of once per weight element.

Three paths, chosen by M at run time (`w4a16_matmul`):
    M <= 16      GEMV-style: one 16-row tile, narrow N tiles, split-K, whole weight streamed once
    16 < M < 64  split-K tensor-core GEMM
    M >= 64      tensor-core GEMM, larger M/N tiles
All three are one Triton kernel with different meta-parameters (`w4a16_configs.py` holds the
table measured on the H100). `w4a16_reference` is the torch dequantize-then-matmul used on CPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install: the reference path still works
    triton = None

PACK = 8  # int4 codes per int32


# ---------------------------------------------------------------- packing / reference (torch)

def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: (N, K) integer codes in [0, 15] -> qweight (K // 8, N) int32 in the kernel layout."""
    if q.dim() != 2:
        raise ValueError(f"expected codes of shape (N, K), got {tuple(q.shape)}")
    n, k = q.shape
    if k % PACK:
        raise ValueError(f"K must be a multiple of {PACK} to pack int4 codes, got K={k}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("int4 codes must lie in [0, 15]")
    qt = q.t().to(torch.int64).reshape(k // PACK, PACK, n)  # (K/8, 8, N)
    shifts = (torch.arange(PACK, device=q.device, dtype=torch.int64) * 4).view(1, PACK, 1)
    packed = (qt << shifts).sum(dim=1)  # (K/8, N), values < 2^32
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """qweight (K // 8, N) int32 -> codes (N, K) uint8."""
    kp, n = qweight.shape
    shifts = (torch.arange(PACK, device=qweight.device, dtype=torch.int32) * 4).view(1, PACK, 1)
    codes = (qweight.view(kp, 1, n) >> shifts) & 0xF  # (K/8, 8, N)
    return codes.reshape(kp * PACK, n).t().contiguous().to(torch.uint8)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> W (N, K) in `dtype`: (q - z) * s, computed in float32."""
    q = unpack_int4(qweight).to(torch.float32)  # (N, K)
    k = q.shape[1]
    g = torch.arange(k, device=q.device) // group_size  # (K,) group of each column
    s = scales.to(torch.float32).t()[:, g]  # (N, K)
    z = zeros.to(torch.float32).t()[:, g]
    return ((q - z) * s).to(dtype)


def w4a16_reference(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    group_size: int) -> torch.Tensor:
    """Dequantize then matmul in float32; x: (..., K) -> (..., N) in x.dtype."""
    w = dequantize(qweight, scales, zeros, group_size)  # (N, K) f32
    return (x.to(torch.float32) @ w.t()).to(x.dtype)


def check_operands(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   group_size: int) -> tuple[int, int]:
    """Boundary check shared by kernel and reference. Returns (K, N)."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(f"qweight must be (K//8, N) int32, got {tuple(qweight.shape)} {qweight.dtype}")
    k, n = qweight.shape[0] * PACK, qweight.shape[1]
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features, the weight expects K={k}")
    if group_size < 8 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= 8, got {group_size}")
    ng = -(-k // group_size)
    if tuple(scales.shape) != (ng, n) or tuple(zeros.shape) != (ng, n):
        raise ValueError(f"scales/zeros must be ({ng}, {n}), got {tuple(scales.shape)} / {tuple(zeros.shape)}")
    if zeros.dtype != torch.uint8:
        raise ValueError(f"zeros must be uint8, got {zeros.dtype}")
    return k, n


# ---------------------------------------------------------------- Triton kernel

if triton is not None:

    @triton.jit(do_not_specialize=["tiles_per_split"])
    def _w4a16_kernel(
        x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr,  # x (M, K); qw (K/8, N) i32; s, z (ng, N); y (M, N)
        M, N, K, stride_xm, stride_ym, tiles_per_split,
        GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        GROUP_M: tl.constexpr, RESHAPE: tl.constexpr,
    ):
        pid = tl.program_id(0)
        pid_k = tl.program_id(1)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        # grouped ordering: GROUP_M row-tiles share a column of weight tiles in L2
        width = GROUP_M * num_pid_n
        first_m = (pid // width) * GROUP_M
        rows = min(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % width) % rows
        pid_n = (pid % width) // rows

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
        mask_m = offs_m < M
        mask_n = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

        k_tile0 = pid_k * tiles_per_split
        for t in range(0, tiles_per_split):
            k0 = (k_tile0 + t) * BLOCK_K
            offs_k = k0 + tl.arange(0, BLOCK_K)  # (BK,)
            x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
            g = k0 // GROUP  # BLOCK_K divides GROUP: one group per tile
            if EVEN_K:
                x = tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)  # (BM, BK)
            else:
                x = tl.load(x_ptrs, mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)
            if RESHAPE:
                # one load per 32-bit word, then 8 shifts: (BK/8, BN) -> (BK/8, 8, BN) -> (BK, BN)
                offs_kp = k0 // 8 + tl.arange(0, BLOCK_K // 8)
                w_ptrs = qw_ptr + offs_kp[:, None] * N + offs_n[None, :]
                if EVEN_K and EVEN_N:
                    qw = tl.load(w_ptrs)
                else:
                    qw = tl.load(w_ptrs, mask=(offs_kp < K // 8)[:, None] & mask_n[None, :], other=0)
                shifts = tl.arange(0, 8) * 4
                q = tl.reshape((qw[:, None, :] >> shifts[None, :, None]) & 0xF, (BLOCK_K, BLOCK_N))
            else:
                # each word gathered once per K row it holds (8 loads, 7 of them L1 hits)
                w_ptrs = qw_ptr + (offs_k // 8)[:, None] * N + offs_n[None, :]
                if EVEN_K and EVEN_N:
                    qw = tl.load(w_ptrs)  # (BK, BN) int32
                else:
                    qw = tl.load(w_ptrs, mask=(offs_k < K)[:, None] & mask_n[None, :], other=0)
                q = (qw >> ((offs_k % 8) * 4)[:, None]) & 0xF
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)  # (BN,)
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0).to(tl.int32)  # (BN,)
            w = (q - z[None, :]).to(tl.float32).to(x.dtype)  # (BK, BN) exact integers in [-15, 15]
            if USE_DOT:
                part = tl.dot(x, w)  # (BM, BN) fp32
            else:
                part = tl.sum(x.to(tl.float32)[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
            acc += part * s[None, :]

        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
        mask = mask_m[:, None] & mask_n[None, :]
        if SPLIT_K == 1:
            tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)
        else:
            tl.atomic_add(y_ptrs, acc, mask=mask, sem="relaxed")  # y is an fp32 workspace here


def launch(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
           cfg: dict, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the kernel with one explicit config. x2: (M, K) contiguous rows -> (M, N) in x2.dtype.

    cfg keys: BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, USE_DOT, num_warps, num_stages (GROUP_M, RESHAPE
    optional). With SPLIT_K > 1 the partial sums go through an fp32 workspace (atomics) and a cast.
    """
    m, k = x2.shape
    n = qweight.shape[1]
    bm, bn, bk, split = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"]
    assert group_size % bk == 0, f"BLOCK_K={bk} must divide the group size {group_size}"
    tiles = triton.cdiv(k, bk)
    split = max(1, min(split, tiles))
    tiles_per_split = triton.cdiv(tiles, split)
    split = triton.cdiv(tiles, tiles_per_split)
    even_k = tiles_per_split * split * bk == k
    if split == 1:
        y = out if out is not None else torch.empty((m, n), device=x2.device, dtype=x2.dtype)
    else:
        y = torch.zeros((m, n), device=x2.device, dtype=torch.float32)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), split)
    _w4a16_kernel[grid](
        x2, qweight, scales, zeros, y, m, n, k, x2.stride(0), y.stride(0), tiles_per_split,
        GROUP=group_size, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=split, USE_DOT=cfg["USE_DOT"],
        EVEN_K=even_k, EVEN_N=(n % bn == 0), GROUP_M=cfg.get("GROUP_M", 8), RESHAPE=cfg.get("RESHAPE", False),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if split == 1:
        return y
    if out is not None:
        out.copy_(y)
        return out
    return y.to(x2.dtype)


def w4a16_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int) -> torch.Tensor:
    """x: (..., K) fp16/bf16 -> (..., N). Triton on CUDA (config chosen by M), reference elsewhere."""
    k, n = check_operands(x, qweight, scales, zeros, group_size)
    if x.device.type != "cuda" or triton is None:
        return w4a16_reference(x, qweight, scales, zeros, group_size)
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the W4A16 kernel takes fp16/bf16 activations, got {x.dtype}")
    from edgeserve_pod.kernels.w4a16_configs import pick_config

    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = launch(x2, qweight, scales, zeros, group_size, pick_config(x2.shape[0], n, k, group_size))
    return y.view(*lead, n)
