"""W4A16 GEMM: y = x @ dequant(W)^T with 4-bit group-quantized weights and 16-bit activations.

Weight format (the kernel's layout, produced once at quantization time by `pack_int4`):
    qweight: (Kp // 8, N) int32   Kp = K rounded up to 128 (the tail codes multiply x = 0)
    scales:  (ceil(K / G), N) float16
    zeros:   (ceil(K / G), N) uint8   integer zero point in [0, 15]
    w[n, k] = (q[k, n] - zeros[k // G, n]) * scales[k // G, n],  G a multiple of 128
Inside each block of 128 input channels, word row r (0..15) holds at bits 4j the code of
k = 128 * block + 16 * j + r. One coalesced (16, BLOCK_N) load of words thus yields eight
(16, BLOCK_N) code tiles by shifts alone, each multiplying a contiguous 16-wide slice of x:
no reshape, no gather, no replicated loads.

Dequantization without int->float conversions (a quarter-rate instruction): the code q is
OR-ed into the mantissa of a power of two C, giving C + q exactly; the kernel accumulates
x . (C + q) and subtracts (C + z) * sum(x) once per 128-block, then scales in fp32 once
per block (the scale is constant inside a group). Three ways to make the codes (DEQ in cfg):
    "f32"   per code: shift, and, shift, or -> float32 128 + q, then a cvt to x's dtype for the dot
            (plain Triton: the path the interpreter runs in CI)
    "lop3"  PTX inline asm, 16-bit values straight away: `lop3.b32 d, w >> 4i, 0x000F000F, MAGIC2, 0xEA`
            ((a & b) | c) turns the nibbles at bits 0-3 and 16-19 into two values packed in one
            b32: codes i and i + 4. 4 lop3 + 3 shifts make all 8 codes of a word (one asm call
            per pair, so only two tiles are live at a time: fewer registers). MAGIC is
            0x4300 (bf16 128.0: 7 mantissa bits, C = 128) or 0x6400 (fp16 1024.0: ulp 1, C = 1024)
    "int"   the same bits as "lop3" from plain Triton integer ops (shift, and, or, truncate,
            bitcast); what the interpreter can run to test the lop3 path's layout and constants
    "lop3s" tensor cores only: lop3, then sub.rn.bf16x2 (C + z) and mul.rn.bf16x2 s in the same asm,
            so the operand is (q - z) * s made in x's 16-bit dtype, and tl.dot accumulates straight
            into one fp32 tile: no sum(x) correction, no second (BM, BN) tile (which makes 4-warp
            tiles of 64 x 128 and up spill). 4 more x2 ops per word. Rounding: (C + q) - (C + z) is
            exact; the fp16 scale is first converted to x's dtype (exact for fp16 x, a rounding to
            bf16 for bf16 x), then the product is rounded. So for bf16 x the weight is rounded twice
            and can differ by an ulp from `dequantize(..., torch.bfloat16)` (fp32 product rounded
            once); for fp16 x it is that single rounding.
    "ints"  the same bits as "lop3s" from plain Triton ops (the interpreter's twin)
The GPU test checks "lop3"/"lop3s" against the reference and bit for bit against "int"/"ints".

Three paths, chosen by M at run time (`w4a16_matmul`, table in `w4a16_configs.py`):
    M <= 16      GEMV-style: one 16-row tensor-core tile (rows >= M masked to 0; at M == 1 the
                 compute is free, the dequant is what costs), or at M == 1 on CUDA cores
                 (BLOCK_M = 1); narrow N tiles; split-K
    16 < M < 64  split-K tensor-core GEMM
    M >= 64      tensor-core GEMM, larger tiles
Split-K partial sums go either through fp32 atomics on a zeroed workspace plus a cast
(REDUCE="atomic"), or into a workspace that the last program of each output tile sums
(REDUCE="last", one kernel; a per-tile counter that the last program resets to 0).
Offsets are int32 and the counters are MAX_TILES: one launch takes at most `max_rows` rows
(18688 for the 8B gate_up shape's default GEMM config), and `w4a16_matmul` splits larger M.
`w4a16_reference` is the torch dequantize-then-matmul used on CPU.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install: the reference path still works
    triton = None

PACK = 8  # int4 codes per int32
IB = 128  # input channels per interleave block (= rows of one kernel K tile)
RB = IB // PACK  # word rows per block


# ---------------------------------------------------------------- packing / reference (torch)

def padded_k(k: int) -> int:
    return -(-k // IB) * IB


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: (N, K) integer codes in [0, 15] -> qweight (Kp // 8, N) int32 in the kernel layout."""
    if q.dim() != 2:
        raise ValueError(f"expected codes of shape (N, K), got {tuple(q.shape)}")
    n, k = q.shape
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("int4 codes must lie in [0, 15]")
    kp = padded_k(k)
    qt = torch.zeros((kp, n), dtype=torch.int64, device=q.device)
    qt[:k] = q.t().to(torch.int64)
    qt = qt.view(kp // IB, PACK, RB, n)  # (block, j, r, N): k = block*128 + 16 j + r
    shifts = (torch.arange(PACK, device=q.device, dtype=torch.int64) * 4).view(1, PACK, 1, 1)
    packed = (qt << shifts).sum(dim=1).reshape(kp // PACK, n)  # (Kp/8, N), values < 2^32
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_int4(qweight: torch.Tensor, in_features: int) -> torch.Tensor:
    """qweight (Kp // 8, N) int32 -> codes (N, K) uint8."""
    kw, n = qweight.shape
    if kw * PACK != padded_k(in_features):
        raise ValueError(f"qweight has {kw} word rows; K={in_features} needs {padded_k(in_features) // PACK}")
    shifts = (torch.arange(PACK, device=qweight.device, dtype=torch.int32) * 4).view(1, PACK, 1, 1)
    w = qweight.view(kw // RB, 1, RB, n)
    codes = (w >> shifts) & 0xF  # (block, j, r, N)
    return codes.reshape(kw * PACK, n)[:in_features].t().contiguous().to(torch.uint8)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
               in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> W (N, K) in `dtype`: (q - z) * s, computed in float32."""
    q = unpack_int4(qweight, in_features).to(torch.float32)  # (N, K)
    g = torch.arange(in_features, device=q.device) // group_size  # (K,) group of each column
    s = scales.to(torch.float32).t()[:, g]  # (N, K)
    z = zeros.to(torch.float32).t()[:, g]
    return ((q - z) * s).to(dtype)


def w4a16_reference(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                    group_size: int) -> torch.Tensor:
    """Dequantize then matmul in float32; x: (..., K) -> (..., N) in x.dtype."""
    w = dequantize(qweight, scales, zeros, group_size, x.shape[-1])  # (N, K) f32
    return (x.to(torch.float32) @ w.t()).to(x.dtype)


def check_operands(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   group_size: int) -> tuple[int, int]:
    """Boundary check shared by kernel and reference. Returns (K, N)."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(f"qweight must be (Kp//8, N) int32, got {tuple(qweight.shape)} {qweight.dtype}")
    k, n = x.shape[-1], qweight.shape[1]
    if qweight.shape[0] * PACK != padded_k(k):
        raise ValueError(f"x has K={k} input features; qweight with {qweight.shape[0]} word rows expects "
                         f"K in ({qweight.shape[0] * PACK - IB}, {qweight.shape[0] * PACK}]")
    if group_size < IB or group_size % IB:
        raise ValueError(f"group_size must be a multiple of {IB}, got {group_size}")
    ng = -(-k // group_size)
    if tuple(scales.shape) != (ng, n) or tuple(zeros.shape) != (ng, n):
        raise ValueError(f"scales/zeros must be ({ng}, {n}), got {tuple(scales.shape)} / {tuple(zeros.shape)}")
    if zeros.dtype != torch.uint8:
        raise ValueError(f"zeros must be uint8, got {zeros.dtype}")
    return k, n


# ---------------------------------------------------------------- Triton kernel

if triton is not None:

    @triton.jit
    def _codes_plus_128(qw, J: tl.constexpr):
        # (RB, BN) int32 words -> 128 + code j as float32, exact: OR the 4 bits into 128.0's mantissa
        return ((((qw >> (4 * J)) & 0xF) << 16) | 0x43000000).to(tl.float32, bitcast=True)

    # one lop3 per two codes: (w >> 4i) & 0x000F000F | MAGIC2 holds codes i (low half) and i + 4
    # (high half) as 16-bit C + q; mov splits the b32 into the two 16-bit registers
    _LOP3_BF16 = tl.constexpr("{ .reg .b32 t; lop3.b32 t, $2, 0x000F000F, 0x43004300, 0xEA; mov.b32 {$0, $1}, t; }")
    _LOP3_FP16 = tl.constexpr("{ .reg .b32 t; lop3.b32 t, $2, 0x000F000F, 0x64006400, 0xEA; mov.b32 {$0, $1}, t; }")

    @triton.jit
    def _codes_lop3(qw, I: tl.constexpr, BF16: tl.constexpr):
        # (RB, BN) int32 words -> C + codes i and i + 4, two (RB, BN) tiles in bf16 (C = 128) or fp16 (C = 1024)
        if BF16:
            return tl.inline_asm_elementwise(_LOP3_BF16, "=h,=h,r", [qw >> (4 * I)], dtype=(tl.bfloat16, tl.bfloat16),
                                             is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise(_LOP3_FP16, "=h,=h,r", [qw >> (4 * I)], dtype=(tl.float16, tl.float16),
                                             is_pure=True, pack=1)

    # ... then (C + q) - (C + z) = q - z exactly, times the group's scale: one rounding, as a bf16
    # dequantized weight has. $3 = C + z twice, $4 = s twice (16-bit halves of a b32)
    _LOP3S_BF16 = tl.constexpr("{ .reg .b32 t; lop3.b32 t, $2, 0x000F000F, 0x43004300, 0xEA; "
                               "sub.rn.bf16x2 t, t, $3; mul.rn.bf16x2 t, t, $4; mov.b32 {$0, $1}, t; }")
    _LOP3S_FP16 = tl.constexpr("{ .reg .b32 t; lop3.b32 t, $2, 0x000F000F, 0x64006400, 0xEA; "
                               "sub.rn.f16x2 t, t, $3; mul.rn.f16x2 t, t, $4; mov.b32 {$0, $1}, t; }")

    @triton.jit
    def _codes_lop3_scaled(qw, I: tl.constexpr, z2, s2, BF16: tl.constexpr):
        # (RB, BN) int32 words -> (q - z) * s for codes i and i + 4, in bf16 or fp16
        if BF16:
            return tl.inline_asm_elementwise(_LOP3S_BF16, "=h,=h,r,r,r", [qw >> (4 * I), z2, s2],
                                             dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise(_LOP3S_FP16, "=h,=h,r,r,r", [qw >> (4 * I), z2, s2],
                                             dtype=(tl.float16, tl.float16), is_pure=True, pack=1)

    @triton.jit
    def _codes_int(qw, J: tl.constexpr, BF16: tl.constexpr):
        # the bits _codes_lop3 makes for code j, from integer ops (runs in the interpreter)
        if BF16:
            return ((((qw >> (4 * J)) & 0xF) | 0x4300).to(tl.int16)).to(tl.bfloat16, bitcast=True)
        else:
            return ((((qw >> (4 * J)) & 0xF) | 0x6400).to(tl.int16)).to(tl.float16, bitcast=True)

    @triton.jit
    def _x_tile(x_ptr, offs_m, offs_k, stride_xm, mask_m, K, EVEN_K: tl.constexpr):
        """(BM, 16) activations: rows offs_m (masked past M), columns offs_k (masked past K)."""
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
        if EVEN_K:
            return tl.load(x_ptrs, mask=mask_m[:, None], other=0.0)
        return tl.load(x_ptrs, mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)

    @triton.jit(do_not_specialize=["tiles_per_split"])
    def _w4a16_kernel(
        x_ptr, qw_ptr, s_ptr, z_ptr, y_ptr,  # x (M, K); qw (Kp/8, N) i32; s, z (ng, N); y (M, N)
        ws_ptr, cnt_ptr,  # split-K workspace: fp32 (SPLIT_K, M, N) or (M, N); int32 counters per tile
        M, N, K, stride_xm, stride_ym, tiles_per_split,
        GROUP_TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        GROUP_M: tl.constexpr, REDUCE: tl.constexpr,  # 0: direct store, 1: fp32 atomics, 2: last program sums
        DEQ: tl.constexpr, ZOFF: tl.constexpr,  # DEQ_CODES; C: 128.0 or 1024.0
    ):
        BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
        RB_: tl.constexpr = 16
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
        offs_r = tl.arange(0, RB_)  # (16,)
        mask_m = offs_m < M
        mask_n = offs_n < N
        if USE_DOT:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        else:
            acc = tl.zeros((RB_, BLOCK_N), dtype=tl.float32)  # M == 1: reduced over rows at the end

        for t in range(0, tiles_per_split):
            tile = pid_k * tiles_per_split + t
            k0 = tile * (RB_ * 8)
            w_ptrs = qw_ptr + (tile * RB_ + offs_r)[:, None] * N + offs_n[None, :]
            if EVEN_N:
                qw = tl.load(w_ptrs)  # (16, BN) int32: 128 codes per column
            else:
                qw = tl.load(w_ptrs, mask=mask_n[None, :], other=0)
            g = tile // GROUP_TILES
            s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)  # (BN,)
            zc = ZOFF + tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0).to(tl.float32)  # (BN,) C + z
            # codes in the order (0, 4), (1, 5), (2, 6), (3, 7): the pairs one lop3 makes, for every DEQ
            if DEQ >= 3:  # weights (q - z) * s made in x's dtype: one accumulator, no sum(x) correction
                s_x = s.to(x_ptr.dtype.element_ty)  # (BN,) rounded once to 16 bits
                zc_x = zc.to(x_ptr.dtype.element_ty)  # (BN,) C + z, exact
                if DEQ == 3:  # both packed twice into a b32 for the x2 instructions
                    s_b = s_x.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
                    z_b = zc_x.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
                    s2 = tl.broadcast_to((s_b | (s_b << 16))[None, :], (RB_, BLOCK_N))
                    z2 = tl.broadcast_to((z_b | (z_b << 16))[None, :], (RB_, BLOCK_N))
                for i in tl.static_range(4):
                    if DEQ == 3:
                        w_lo, w_hi = _codes_lop3_scaled(qw, i, z2, s2, BF16)
                    for h in tl.static_range(2):
                        offs_k = k0 + (i + 4 * h) * RB_ + offs_r
                        xj = _x_tile(x_ptr, offs_m, offs_k, stride_xm, mask_m, K, EVEN_K)  # (BM, 16)
                        if DEQ == 3:
                            wj = w_lo if h == 0 else w_hi
                        else:
                            wj = (_codes_int(qw, i + 4 * h, BF16) - zc_x[None, :]) * s_x[None, :]
                        acc = tl.dot(xj, wj, acc)
            elif USE_DOT:
                part = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                xsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
                for i in tl.static_range(4):
                    if DEQ == 1:
                        w_lo, w_hi = _codes_lop3(qw, i, BF16)
                    for h in tl.static_range(2):
                        offs_k = k0 + (i + 4 * h) * RB_ + offs_r
                        xj = _x_tile(x_ptr, offs_m, offs_k, stride_xm, mask_m, K, EVEN_K)  # (BM, 16)
                        if DEQ == 0:
                            wj = _codes_plus_128(qw, i + 4 * h).to(xj.dtype)  # (16, BN), exact in bf16/fp16
                        elif DEQ == 1:
                            wj = w_lo if h == 0 else w_hi
                        else:
                            wj = _codes_int(qw, i + 4 * h, BF16)
                        part = tl.dot(xj, wj, part)
                        xsum += tl.sum(xj.to(tl.float32), axis=1)
                acc += (part - xsum[:, None] * zc[None, :]) * s[None, :]
            else:
                part = tl.zeros((RB_, BLOCK_N), dtype=tl.float32)
                xsum = tl.zeros((RB_,), dtype=tl.float32)
                for i in tl.static_range(4):
                    if DEQ == 1:
                        w_lo, w_hi = _codes_lop3(qw, i, BF16)
                    for h in tl.static_range(2):
                        offs_k = k0 + (i + 4 * h) * RB_ + offs_r
                        if EVEN_K:
                            xj = tl.load(x_ptr + offs_k).to(tl.float32)  # (16,) the one row
                        else:
                            xj = tl.load(x_ptr + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
                        if DEQ == 0:
                            wj = _codes_plus_128(qw, i + 4 * h)
                        elif DEQ == 1:
                            wj = (w_lo if h == 0 else w_hi).to(tl.float32)  # bf16 -> f32 is a shift
                        else:
                            wj = _codes_int(qw, i + 4 * h, BF16).to(tl.float32)
                        part += xj[:, None] * wj
                        xsum += xj
                acc += (part - xsum[:, None] * zc[None, :]) * s[None, :]

        if USE_DOT:
            out = acc  # (BM, BN)
        else:
            out = tl.sum(acc, axis=0)[None, :]  # (1, BN)
        out_m = offs_m if USE_DOT else tl.arange(0, 1)
        out_mask = (out_m < M)[:, None] & mask_n[None, :]
        y_ptrs = y_ptr + out_m[:, None] * stride_ym + offs_n[None, :]
        if REDUCE == 0:
            tl.store(y_ptrs, out.to(y_ptr.dtype.element_ty), mask=out_mask)
        elif REDUCE == 1:
            tl.atomic_add(ws_ptr + out_m[:, None] * N + offs_n[None, :], out, mask=out_mask, sem="relaxed")
        else:
            plane = M * N
            tl.store(ws_ptr + pid_k * plane + out_m[:, None] * N + offs_n[None, :], out, mask=out_mask)
            tl.debug_barrier()  # every thread's partial is written before the counter moves
            done = tl.atomic_add(cnt_ptr + pid, 1, sem="acq_rel", scope="gpu")
            if done == SPLIT_K - 1:  # the last program of this tile sums the SPLIT_K partials
                tot = tl.zeros(out.shape, dtype=tl.float32)
                for sk in range(0, SPLIT_K):
                    tot += tl.load(ws_ptr + sk * plane + out_m[:, None] * N + offs_n[None, :], mask=out_mask,
                                   other=0.0, cache_modifier=".cg")
                tl.store(y_ptrs, tot.to(y_ptr.dtype.element_ty), mask=out_mask)
                tl.atomic_xchg(cnt_ptr + pid, 0, sem="relaxed", scope="gpu")  # ready for the next call


DEQ_CODES = {"f32": 0, "lop3": 1, "int": 2, "lop3s": 3, "ints": 4}
TWIN = {"lop3": "int", "lop3s": "ints"}  # inline-PTX variant -> plain-Triton variant with the same bits


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_COUNTERS: dict = {}  # device -> int32 zeros, one counter per output tile, reset by the kernel itself
MAX_TILES = 1 << 16
INT32_MAX = (1 << 31) - 1  # the kernel's element offsets are int32


def _split(cfg: dict, tiles: int) -> int:
    """SPLIT_K as launched: at most the K tiles, and a divisor of them (whole tiles per split)."""
    split = max(1, min(cfg["SPLIT_K"], tiles))
    while tiles % split:
        split -= 1
    return split


def max_rows(cfg: dict, n: int, k: int, stride_x: int | None = None, stride_y: int | None = None) -> int:
    """The most rows (M) one launch of `cfg` can take. The kernel computes element offsets in
    int32: rows * stride for x and y, rows * N for the fp32 split-K workspace, and
    pid_k * M * N + row * N for REDUCE="last" (SPLIT_K planes of M x N), which wraps once
    SPLIT_K * M * N > 2^31 - 1 (SPLIT_K = 2, N = 28672: M > 37449). REDUCE="last" also has
    MAX_TILES tile counters. `w4a16_matmul` splits larger inputs into launches of this many rows."""
    tiles = padded_k(k) // IB
    split = _split(cfg, tiles)
    rows = min(INT32_MAX // max(stride_x or k, 1), INT32_MAX // max(stride_y or n, 1))
    if split > 1:
        if cfg.get("REDUCE", "atomic") == "atomic":
            rows = min(rows, INT32_MAX // n)
        else:
            rows = min(rows, INT32_MAX // (split * n), MAX_TILES // -(-n // cfg["BLOCK_N"]) * cfg["BLOCK_M"])
    return rows


def _counters(device: torch.device) -> torch.Tensor:
    c = _COUNTERS.get(device)
    if c is None:
        c = _COUNTERS[device] = torch.zeros(MAX_TILES, dtype=torch.int32, device=device)
    return c


def launch(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
           cfg: dict, out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the kernel with one explicit config. x2: (M, K) rows with unit stride -> (M, N) in x2.dtype.

    cfg keys: BLOCK_M, BLOCK_N, SPLIT_K, USE_DOT, REDUCE ("atomic" | "last"), num_warps, num_stages,
    GROUP_M (optional), DEQ (a key of DEQ_CODES, default "f32"; "lop3s"/"ints" need USE_DOT).
    BLOCK_K is always 128 (one interleave block per K tile). "lop3"/"lop3s" are inline PTX: they
    cannot run under TRITON_INTERPRET=1 (ValueError; TWIN names their plain-Triton twins).
    """
    m, k = x2.shape
    deq = DEQ_CODES.get(cfg.get("DEQ", "f32"))
    if deq is None:
        raise ValueError(f"cfg DEQ must be one of {sorted(DEQ_CODES)}, got {cfg.get('DEQ')!r}")
    if deq in (1, 3) and interpreting():
        raise ValueError(f'DEQ="{cfg["DEQ"]}" is inline PTX, which TRITON_INTERPRET=1 cannot run; '
                         'use "f32", "int" or "ints"')
    if deq >= 3 and not cfg["USE_DOT"]:
        raise ValueError(f'DEQ="{cfg["DEQ"]}" is for the tensor-core path (USE_DOT=True)')
    if x2.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the W4A16 kernel takes fp16/bf16 activations, got {x2.dtype}")
    n = qweight.shape[1]
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    use_dot = cfg["USE_DOT"]
    if not use_dot and m != 1:
        raise ValueError("the CUDA-core path (USE_DOT=False) handles M == 1 only")
    tiles = qweight.shape[0] // RB
    split = _split(cfg, tiles)
    tiles_per_split = tiles // split
    limit = max_rows(cfg, n, k, x2.stride(0), out.stride(0) if out is not None else n)
    if m > limit:
        raise ValueError(f"M={m} rows exceed the {limit} one launch of this config can take (int32 offsets into x, "
                         f"y and the split-K workspace, {MAX_TILES} split-K counters); w4a16_matmul splits the rows")
    even_k = tiles * IB == k
    grid_mn = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    y = out if out is not None else torch.empty((m, n), device=x2.device, dtype=x2.dtype)
    reduce = 0 if split == 1 else (1 if cfg.get("REDUCE", "atomic") == "atomic" else 2)
    if reduce == 1:
        ws = torch.zeros((m, n), device=x2.device, dtype=torch.float32)
    elif reduce == 2:  # grid_mn <= MAX_TILES: max_rows
        ws = torch.empty((split, m, n), device=x2.device, dtype=torch.float32)
    else:
        ws = y
    cnt = _counters(x2.device) if reduce == 2 else y
    _w4a16_kernel[(grid_mn, split)](
        x2, qweight, scales, zeros, y, ws, cnt, m, n, k, x2.stride(0), y.stride(0), tiles_per_split,
        GROUP_TILES=group_size // IB, BLOCK_M=bm, BLOCK_N=bn, SPLIT_K=split, USE_DOT=use_dot,
        EVEN_K=even_k, EVEN_N=(n % bn == 0), GROUP_M=cfg.get("GROUP_M", 8), REDUCE=reduce,
        DEQ=deq, ZOFF=128.0 if deq == 0 or x2.dtype == torch.bfloat16 else 1024.0,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if reduce == 1:
        y.copy_(ws)
    return y


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
    cfg = pick_config(x2.shape[0], n, k)
    if cfg.get("DEQ") in TWIN and interpreting():
        cfg["DEQ"] = TWIN[cfg["DEQ"]]  # the same bits from plain Triton ops
    y = launch_rows(x2, qweight, scales, zeros, group_size, cfg)
    return y.view(*lead, n)


def launch_rows(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                group_size: int, cfg: dict) -> torch.Tensor:
    """`launch`, in several launches of at most `max_rows` rows when M is larger than one can take
    (a prefill of tens of thousands of tokens on a wide layer)."""
    m, k = x2.shape
    n = qweight.shape[1]
    rows = max_rows(cfg, n, k, x2.stride(0), n)
    if m <= rows:
        return launch(x2, qweight, scales, zeros, group_size, cfg)
    y = torch.empty((m, n), device=x2.device, dtype=x2.dtype)
    for r in range(0, m, rows):
        launch(x2[r:r + rows], qweight, scales, zeros, group_size, cfg, out=y[r:r + rows])
    return y
