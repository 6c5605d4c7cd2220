"""Dense paged attention in Triton: split-K decode (flash-decoding) and varlen prefill.

KV layout (attention_base.py): k_cache, v_cache (num_blocks, block_size, num_kv_heads, head_dim),
bf16 / fp16 / fp32, or float8_e4m3fn with per-kv-head float32 scales (k_scale, v_scale: (Hkv,))
read inside the kernel: the fp8 tile is widened in registers, the scales are folded into the
softmax scale (K) and into the output (V); no dequantized copy of the cache is ever made.

Decode: one program per (sequence, kv head, split). It attends the whole GQA group of that kv
head at once (q tile (GROUP_PAD, D)), so each K/V byte is read once per step. The splits write
partial (m, l, acc); `_decode_reduce` merges them (log-sum-exp). The same kernel runs Quest:
given `page_idx` (B, Hkv, n_sel) it visits only those logical pages.

Prefill: one program per (q tile, sequence, q head) over the paged context (cached prefix + the
new tokens, already written to the cache), causal with the query offset ctx_len - q_len. Given
`head_kind`, streaming heads see only the one-shot block-sparse prefill's sink + window pattern
(`StreamingMask`) at their absolute positions: their programs visit only the key tiles that meet
the sink or the tile's window, unmasked inside, masked at the edges (the sparse backend's prefill
after a cached prefix, or of a later chunk). Retrieval heads in such a launch take the same walk
with no sink and an unbounded window: dense causal, the same tiles in the same order as the dense
loop (one walk keeps shared memory at the dense kernel's: 80 KiB at 64x64 bf16 for sm_90, checked
by compiling). Without `head_kind` the kernel is the dense loop alone, as before.

Reference: `reference_paged_attention` (float32 torch) below; tests in
tests/kernels/test_paged_attention.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

FP8 = torch.float8_e4m3fn
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def dot_dtype(cache_dtype: torch.dtype):
    """The dtype tl.dot runs in. The Triton 3.6 CPU interpreter gets bf16 tl.dot wrong (it
    multiplies raw bits), so under the interpreter every dot runs in float32."""
    if _INTERPRET or cache_dtype == torch.float32:
        return tl.float32
    return tl.float16 if cache_dtype == torch.float16 else tl.bfloat16


# FP8 caches: the dtype the e4m3 tiles are widened to for tl.dot. float16 is one native convert
# per two elements on sm_89+ (e4m3 -> f16 is exact); bfloat16 goes through float32.
FP8_DOT = torch.float16


# ----------------------------------------------------------------------------------- decode


@triton.jit
def online_softmax_step(s, v, acc, l_i, m_i, DOT_T: tl.constexpr):
    """One flash-attention update over a key block: s (rows, BLOCK_N) are log2-scaled scores with
    -inf where masked; rows that have seen only -inf keep m_i = -inf, l_i = 0, acc = 0."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT_T), v.to(DOT_T))
    return acc, l_i, m_new


@triton.jit
def _decode_split_kernel(
    Q,  # (B, Hq, D)
    K, V,  # (num_blocks, BS, Hkv, D)
    BlockTable,  # (B, max_blocks) int32
    ContextLens,  # (B,) int32
    PageIdx,  # (B, Hkv, n_sel) int32 logical pages, or dummy when not SELECT
    NumSel,  # (B, Hkv) int32 pages selected, or dummy
    KScale, VScale,  # (Hkv,) float32, or dummy when not FP8
    Mid_M, Mid_L,  # (B, Hq, S) float32
    Mid_O,  # (B, Hq, S, D) float32
    sm_scale,
    tokens_per_split,
    stride_qb, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_bt,
    stride_pb, stride_ph,
    num_splits,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
    SELECT: tl.constexpr, IS_FP8: tl.constexpr, DOT_T: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(ContextLens + b)
    if SELECT:
        n_tok = tl.load(NumSel + b * tl.num_programs(1) + kvh) * BLOCK_SIZE  # NumSel is contiguous (B, Hkv)
    else:
        n_tok = ctx
    t_start = split * tokens_per_split
    t_end = tl.minimum(t_start + tokens_per_split, n_tok)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    heads = kvh * GROUP + offs_g
    g_mask = offs_g < GROUP
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=g_mask[:, None], other=0.0)
    qk_scale = sm_scale * 1.44269504  # exp2 domain
    if IS_FP8:
        qk_scale = qk_scale * tl.load(KScale + kvh)
    q = q.to(DOT_T)

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    for t0 in range(t_start, t_end, BLOCK_N):
        t = t0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,) index into the visited token sequence
        in_range = t < t_end
        if SELECT:
            page = tl.load(PageIdx + b * stride_pb + kvh * stride_ph + t // BLOCK_SIZE, mask=in_range, other=0)
        else:
            page = t // BLOCK_SIZE
        row = t % BLOCK_SIZE
        pos = page * BLOCK_SIZE + row  # absolute position in the sequence
        valid = in_range & (pos < ctx)
        phys = tl.load(BlockTable + b * stride_bt + page, mask=valid, other=0).to(tl.int64)
        k = tl.load(K + phys[:, None] * stride_kb + row[:, None] * stride_ks + kvh * stride_kh + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        v = tl.load(V + phys[:, None] * stride_vb + row[:, None] * stride_vs + kvh * stride_vh + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k.to(DOT_T))) * qk_scale  # (GROUP_PAD, BLOCK_N)
        s = tl.where(valid[None, :], s, float("-inf"))
        acc, l_i, m_i = online_softmax_step(s, v, acc, l_i, m_i, DOT_T)
    if IS_FP8:
        acc = acc * tl.load(VScale + kvh)
    mid = (b * (GROUP * tl.num_programs(1)) + heads) * num_splits + split  # (GROUP_PAD,)
    tl.store(Mid_M + mid, m_i, mask=g_mask)
    tl.store(Mid_L + mid, l_i, mask=g_mask)
    tl.store(Mid_O + mid[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=g_mask[:, None])


@triton.jit
def _decode_reduce(
    Mid_M, Mid_L, Mid_O,  # (B, Hq, S), (B, Hq, S), (B, Hq, S, D) float32
    Out,  # (B, Hq, D)
    stride_ob, stride_oh,
    num_splits,
    HEAD_DIM: tl.constexpr, SPLIT_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLIT_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    base = (b * tl.num_programs(1) + h) * num_splits
    s_mask = offs_s < num_splits
    m = tl.load(Mid_M + base + offs_s, mask=s_mask, other=float("-inf"))
    l = tl.load(Mid_L + base + offs_s, mask=s_mask, other=0.0)
    o = tl.load(Mid_O + (base + offs_s)[:, None] * HEAD_DIM + offs_d[None, :], mask=s_mask[:, None], other=0.0)
    m_max = tl.max(m, 0)
    w = tl.where(l > 0, tl.exp2(m - m_max), 0.0)  # (SPLIT_PAD,)
    out = tl.sum(o * w[:, None], 0) / tl.sum(l * w, 0)
    tl.store(Out + b * stride_ob + h * stride_oh + offs_d, out.to(Out.dtype.element_ty))


def _check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale, v_scale) -> bool:
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache/v_cache must both be (num_blocks, block_size, num_kv_heads, head_dim), "
                         f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("k_cache/v_cache must be contiguous in head_dim")
    is_fp8 = k_cache.dtype == FP8
    if is_fp8 != (v_cache.dtype == FP8):
        raise ValueError(f"k_cache and v_cache dtypes differ: {k_cache.dtype} vs {v_cache.dtype}")
    if is_fp8:
        hkv = k_cache.shape[2]
        for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
            if s is None or s.dtype != torch.float32 or s.numel() != hkv:
                raise ValueError(f"fp8 KV needs {name} float32 of {hkv} elements (one per kv head), got "
                                 f"{None if s is None else (s.dtype, tuple(s.shape))}")
    return is_fp8


# (block_n, num_warps, num_stages) of the split-K decode kernel when the caller gives none, per KV
# element size. From bench/kv_fp8_decode.py on the H100 (cold L2, the engine's (nb, BS, Hkv, D)
# layout; bench/results/quant/2026-11-23-h100-kv-fp8-layout.json): 16-bit KV at block 128 / 2 stages
# is within 8% of the best of 24 configs at B = 1 x 8K, 32K, 128K and B = 8 x 32K; fp8 KV needs deeper
# pipelining (half the bytes per tile) and is within 8% at 8K and 1% at 32K+ with 5 stages. The old
# default (64, 4, 2) was 1.2x slower (bf16) and 1.4-1.7x slower (fp8) at 32K-128K.
DECODE_LAUNCH = {2: (128, 4, 2), 1: (128, 4, 5)}
_SMEM: dict[int, int] = {}


def decode_launch(kv_dtype: torch.dtype, head_dim: int, device: torch.device) -> tuple[int, int, int]:
    """(block_n, num_warps, num_stages) for paged_decode: the table above, with stages (then block_n)
    cut until the K and V tiles of every stage fit the device's shared memory (a smaller GPU
    than the H100 gets a shallower pipeline instead of a launch failure)."""
    esize = 1 if kv_dtype == FP8 else 2
    bn, warps, stages = DECODE_LAUNCH.get(esize, DECODE_LAUNCH[2])
    if device.type != "cuda":
        return bn, warps, stages
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMEM:
        _SMEM[idx] = torch.cuda.get_device_properties(idx).shared_memory_per_block_optin
    budget = _SMEM[idx] - 16 * 1024  # q tile, softmax state and the layout conversions' scratch
    while stages * 2 * bn * head_dim * esize > budget and (stages > 2 or bn > 32):
        if stages > 2:
            stages -= 1
        else:
            bn //= 2
    return bn, warps, stages


def decode_num_splits(batch: int, num_kv_heads: int, max_tokens: int, block_n: int, sm_count: int = 132) -> int:
    """Enough (sequence, kv head, split) programs to fill about two waves of SMs, each split at
    least one BLOCK_N tile. Computed from an upper bound, so no device sync is needed."""
    want = max(1, (2 * sm_count) // max(1, batch * num_kv_heads))
    return max(1, min(want, triton.cdiv(max_tokens, block_n), 256))


def paged_decode(
    q: torch.Tensor,  # (B, Hq, D)
    k_cache: torch.Tensor,  # (num_blocks, BS, Hkv, D)
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # (B, max_blocks) int32
    context_lens: torch.Tensor,  # (B,) int32, tokens incl. the new one
    scale: float,
    k_scale: torch.Tensor | None = None,  # (Hkv,) float32, fp8 cache only
    v_scale: torch.Tensor | None = None,
    page_idx: torch.Tensor | None = None,  # (B, Hkv, n_sel) int32 logical pages (Quest)
    num_sel: torch.Tensor | None = None,  # (B, Hkv) int32 valid entries of page_idx
    num_splits: int | None = None,
    block_n: int | None = None,  # None: decode_launch's choice for the cache dtype (all three)
    num_warps: int | None = None,
    num_stages: int | None = None,
    out: torch.Tensor | None = None,
    fp8_dot: torch.dtype | None = None,  # override FP8_DOT (benchmarks)
) -> torch.Tensor:  # (B, Hq, D) in q.dtype
    is_fp8 = _check_cache(k_cache, v_cache, k_scale, v_scale)
    B, Hq, D = q.shape
    _, BS, Hkv, Dk = k_cache.shape
    if Dk != D or Hq % Hkv or q.stride(-1) != 1:
        raise ValueError(f"q (B, Hq, D) = {tuple(q.shape)} does not fit cache {tuple(k_cache.shape)}")
    if block_tables.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise ValueError(f"block_tables/context_lens must be int32, got {block_tables.dtype}/{context_lens.dtype}")
    group = Hq // Hkv
    select = page_idx is not None
    if select:
        if page_idx.shape[:2] != (B, Hkv) or num_sel is None or num_sel.shape != (B, Hkv):
            raise ValueError(f"page_idx must be (B={B}, Hkv={Hkv}, n_sel) with num_sel (B, Hkv); got "
                             f"{tuple(page_idx.shape)}, {None if num_sel is None else tuple(num_sel.shape)}")
        page_idx = page_idx.contiguous()
        num_sel = num_sel.to(torch.int32).contiguous()
        max_tokens = page_idx.shape[2] * BS
    else:
        page_idx = num_sel = context_lens  # dummies, never read
        max_tokens = block_tables.shape[1] * BS
    if block_n is None or num_warps is None or num_stages is None:
        d_bn, d_warps, d_stages = decode_launch(k_cache.dtype, D, q.device)
        block_n, num_warps, num_stages = block_n or d_bn, num_warps or d_warps, num_stages or d_stages
    block_n = max(16, min(block_n, triton.next_power_of_2(max_tokens)))
    if num_splits is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 8
        num_splits = decode_num_splits(B, Hkv, max_tokens, block_n, sms)
    tokens_per_split = triton.cdiv(triton.cdiv(max_tokens, num_splits), block_n) * block_n
    num_splits = triton.cdiv(max_tokens, tokens_per_split)
    mid_m = torch.empty(B, Hq, num_splits, device=q.device, dtype=torch.float32)
    mid_l = torch.empty_like(mid_m)
    mid_o = torch.empty(B, Hq, num_splits, D, device=q.device, dtype=torch.float32)
    dummy = k_scale if is_fp8 else mid_m
    _decode_split_kernel[(B, Hkv, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, page_idx, num_sel,
        dummy if not is_fp8 else k_scale, dummy if not is_fp8 else v_scale,
        mid_m, mid_l, mid_o, scale, tokens_per_split,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0),
        page_idx.stride(0) if select else 0, page_idx.stride(1) if select else 0,
        num_splits,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=D,
        BLOCK_SIZE=BS, BLOCK_N=block_n, SELECT=select, IS_FP8=is_fp8,
        DOT_T=dot_dtype((fp8_dot or FP8_DOT) if is_fp8 else k_cache.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
    if out is None:
        out = torch.empty_like(q)
    _decode_reduce[(B, Hq)](mid_m, mid_l, mid_o, out, out.stride(0), out.stride(1), num_splits,
                            HEAD_DIM=D, SPLIT_PAD=max(2, triton.next_power_of_2(num_splits)))
    return out


# ---------------------------------------------------------------------------------- prefill


@dataclass(frozen=True)
class StreamingMask:
    """What a streaming head attends in paged prefill: the one-shot block-sparse prefill's pattern
    (block_sparse_prefill.plan_block_sparse with the same four numbers), at the query's absolute
    position p, so that a prompt prefilled in chunks or after a cached prefix gets the same
    attention as in one piece. Key t is allowed iff t <= p and (t < sink_end or t >= lo(p)):
        sink_end = ceil(sink_tokens / block_n) * block_n
        lo(p)    = max(floor(max(floor(p / block_m) * block_m - window_tokens, 0) / block_n) * block_n, sink_end)
    block_m / block_n are the plan's granularity (SparseAttentionConfig.prefill_block_m / _n), not
    the prefill kernel's tiles."""

    sink_tokens: int
    window_tokens: int
    block_m: int = 128
    block_n: int = 64

    def __post_init__(self) -> None:
        if min(self.sink_tokens, self.window_tokens) < 0 or min(self.block_m, self.block_n) < 1 \
                or self.block_m % self.block_n:
            raise ValueError(f"StreamingMask needs sink/window >= 0 and block_m a multiple of block_n >= 1, got {self}")

    @property
    def sink_end(self) -> int:
        return -(-self.sink_tokens // self.block_n) * self.block_n


@triton.jit
def _stream_lo(p, sink_end, window, MASK_BM, MASK_BN):
    """StreamingMask.lo(p): the first window key of a query at absolute position p (p >= 0)."""
    lo = tl.maximum((p // MASK_BM) * MASK_BM - window, 0) // MASK_BN * MASK_BN
    return tl.maximum(lo, sink_end)


@triton.jit
def _prefill_stream_keys(acc, l_i, m_i, q, K, V, bt, k_head, v_head, stride_kb, stride_ks, stride_vb, stride_vs,
                         n_lo, n_hi, hi, q_pos, lo_row, sink_end, qk_scale, offs_d,
                         MASK: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, DOT_T: tl.constexpr):
    """One head's key tiles starting in [n_lo, n_hi) (multiples of BLOCK_N). MASK: the element mask
    (causal, sink / window edge, keys < hi); without it every key of the tile is allowed for every
    row (the caller guarantees it)."""
    for n0 in range(n_lo, n_hi, BLOCK_N):
        t = n0 + tl.arange(0, BLOCK_N)
        if MASK:
            t_ok = t < hi
            phys = tl.load(bt + t // BLOCK_SIZE, mask=t_ok, other=0).to(tl.int64)
        else:
            phys = tl.load(bt + t // BLOCK_SIZE).to(tl.int64)
        row = t % BLOCK_SIZE
        k_ptr = K + phys[:, None] * stride_kb + row[:, None] * stride_ks + k_head + offs_d[None, :]
        v_ptr = V + phys[:, None] * stride_vb + row[:, None] * stride_vs + v_head + offs_d[None, :]
        if MASK:
            k = tl.load(k_ptr, mask=t_ok[:, None], other=0.0)
            v = tl.load(v_ptr, mask=t_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptr)
            v = tl.load(v_ptr)
        s = tl.dot(q, tl.trans(k.to(DOT_T))) * qk_scale  # (BLOCK_M, BLOCK_N)
        if MASK:
            ok = (t[None, :] <= q_pos[:, None]) & ((t[None, :] < sink_end) | (t[None, :] >= lo_row[:, None]))
            s = tl.where(ok & t_ok[None, :], s, float("-inf"))
        acc, l_i, m_i = online_softmax_step(s, v, acc, l_i, m_i, DOT_T)
    return acc, l_i, m_i


@triton.jit
def _prefill_kernel(
    Q,  # (T, Hq, D) packed new tokens
    K, V,  # (num_blocks, BS, Hkv, D)
    BlockTables,  # (n_p, max_blocks) int32
    CuQ, CuK,  # (n_p + 1,) int32
    KScale, VScale,
    HeadKind,  # (Hq,) int32 0 retrieval / 1 streaming, or dummy when not STREAM
    Out,  # (T, Hq, D)
    sm_scale,
    sink_end, window, mask_bm, mask_bn,  # StreamingMask (STREAM only)
    stride_qt, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_bt,
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_FP8: tl.constexpr, DOT_T: tl.constexpr,
    STREAM: tl.constexpr,
):
    mt = tl.program_id(0)
    sq = tl.program_id(1)
    h = tl.program_id(2)
    kvh = h // GROUP
    q_start = tl.load(CuQ + sq)
    q_len = tl.load(CuQ + sq + 1) - q_start
    ctx = tl.load(CuK + sq + 1) - tl.load(CuK + sq)
    if mt * BLOCK_M >= q_len:
        return
    offs_m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < q_len
    q_pos = ctx - q_len + offs_m  # absolute position of each query row
    q = tl.load(Q + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=m_mask[:, None], other=0.0).to(DOT_T)
    qk_scale = sm_scale * 1.44269504
    if IS_FP8:
        qk_scale = qk_scale * tl.load(KScale + kvh)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    hi = tl.minimum(ctx, ctx - q_len + (mt + 1) * BLOCK_M)  # causal: last key any row here sees
    if STREAM:
        # Key tiles meeting [0, sink_end) or this q tile's window [lo(p0), hi); element masks only
        # on the edge tiles (sink, the window's leading edge, the diagonal), the interior unmasked.
        # A retrieval head is the same walk with no sink and lo = 0: dense causal, one code path
        # (two would keep two sets of pipeline buffers in shared memory).
        streaming = tl.load(HeadKind + h) != 0
        s_end = tl.where(streaming, sink_end, 0)
        win = tl.where(streaming, window, 1 << 30)
        p0 = ctx - q_len + mt * BLOCK_M  # first row's position (rows are ascending)
        lo_row = _stream_lo(q_pos, s_end, win, mask_bm, mask_bn)
        lo0 = _stream_lo(p0, s_end, win, mask_bm, mask_bn)
        lo1 = _stream_lo(hi - 1, s_end, win, mask_bm, mask_bn)  # last valid row's
        a_end = tl.cdiv(tl.minimum(s_end, hi), BLOCK_N) * BLOCK_N  # sink tiles: [0, a_end)
        b_lo = tl.maximum(lo0 // BLOCK_N * BLOCK_N, a_end)  # window tiles: [b_lo, hi)
        full_lo = tl.maximum(tl.minimum(tl.cdiv(lo1, BLOCK_N) * BLOCK_N, hi), b_lo)  # all rows see keys >= lo1 ...
        full_hi = tl.maximum((p0 + 1) // BLOCK_N * BLOCK_N, full_lo)  # ... and <= p0
        bt = BlockTables + sq * stride_bt
        # ascending, as the dense loop: masked sink and leading-edge tiles, the unmasked interior
        # [full_lo, full_hi), the masked diagonal tiles [full_hi, hi). The masked loops step one
        # tile per outer iteration (not software-pipelined: their buffers would add shared memory).
        n1 = a_end // BLOCK_N
        n2 = n1 + tl.cdiv(full_lo - b_lo, BLOCK_N)
        for i in range(0, n2):
            n0 = tl.where(i < n1, i * BLOCK_N, b_lo + (i - n1) * BLOCK_N)
            acc, l_i, m_i = _prefill_stream_keys(acc, l_i, m_i, q, K, V, bt, kvh * stride_kh, kvh * stride_vh,
                                                 stride_kb, stride_ks, stride_vb, stride_vs, n0, n0 + 1, hi, q_pos,
                                                 lo_row, s_end, qk_scale, offs_d, True, BLOCK_SIZE, BLOCK_N, DOT_T)
        acc, l_i, m_i = _prefill_stream_keys(acc, l_i, m_i, q, K, V, bt, kvh * stride_kh, kvh * stride_vh,
                                             stride_kb, stride_ks, stride_vb, stride_vs, full_lo, full_hi, hi, q_pos,
                                             lo_row, s_end, qk_scale, offs_d, False, BLOCK_SIZE, BLOCK_N, DOT_T)
        for n0 in range(full_hi, hi, BLOCK_N):
            acc, l_i, m_i = _prefill_stream_keys(acc, l_i, m_i, q, K, V, bt, kvh * stride_kh, kvh * stride_vh,
                                                 stride_kb, stride_ks, stride_vb, stride_vs, n0, n0 + 1, hi, q_pos,
                                                 lo_row, s_end, qk_scale, offs_d, True, BLOCK_SIZE, BLOCK_N, DOT_T)
    else:
        for n0 in range(0, hi, BLOCK_N):
            t = n0 + tl.arange(0, BLOCK_N)
            t_ok = t < hi
            phys = tl.load(BlockTables + sq * stride_bt + t // BLOCK_SIZE, mask=t_ok, other=0).to(tl.int64)
            row = t % BLOCK_SIZE
            k = tl.load(K + phys[:, None] * stride_kb + row[:, None] * stride_ks + kvh * stride_kh + offs_d[None, :],
                        mask=t_ok[:, None], other=0.0)
            v = tl.load(V + phys[:, None] * stride_vb + row[:, None] * stride_vs + kvh * stride_vh + offs_d[None, :],
                        mask=t_ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k.to(DOT_T))) * qk_scale  # (BLOCK_M, BLOCK_N)
            s = tl.where((t[None, :] <= q_pos[:, None]) & t_ok[None, :], s, float("-inf"))
            acc, l_i, m_i = online_softmax_step(s, v, acc, l_i, m_i, DOT_T)
    if IS_FP8:
        acc = acc * tl.load(VScale + kvh)
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + (q_start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             acc.to(Out.dtype.element_ty), mask=m_mask[:, None])


def paged_prefill(
    q: torch.Tensor,  # (T, Hq, D) packed new tokens of n_p sequences
    k_cache: torch.Tensor,  # (num_blocks, BS, Hkv, D), new tokens already written
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # (n_p, max_blocks) int32
    cu_seqlens_q: torch.Tensor,  # (n_p + 1,) int32
    cu_seqlens_k: torch.Tensor,  # (n_p + 1,) int32, context = cached + new
    max_seqlen_q: int,
    scale: float,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
    out: torch.Tensor | None = None,
    head_kind: torch.Tensor | None = None,  # (Hq,) int32: 0 retrieval (dense causal), 1 streaming
    streaming: StreamingMask | None = None,  # what streaming heads see; needed with head_kind
) -> torch.Tensor:  # (T, Hq, D)
    is_fp8 = _check_cache(k_cache, v_cache, k_scale, v_scale)
    T, Hq, D = q.shape
    _, BS, Hkv, Dk = k_cache.shape
    if Dk != D or Hq % Hkv or q.stride(-1) != 1:
        raise ValueError(f"q (T, Hq, D) = {tuple(q.shape)} does not fit cache {tuple(k_cache.shape)}")
    n_p = cu_seqlens_q.numel() - 1
    if cu_seqlens_k.numel() != n_p + 1 or block_tables.shape[0] != n_p:
        raise ValueError(f"cu_seqlens_q/cu_seqlens_k/block_tables disagree on the number of sequences: "
                         f"{n_p} / {cu_seqlens_k.numel() - 1} / {block_tables.shape[0]}")
    stream = head_kind is not None
    if stream:
        if head_kind.shape != (Hq,) or head_kind.dtype != torch.int32 or head_kind.device != q.device:
            raise ValueError(f"head_kind must be ({Hq},) int32 on {q.device}, got {tuple(head_kind.shape)} "
                             f"{head_kind.dtype} on {head_kind.device}")
        if not isinstance(streaming, StreamingMask):
            raise ValueError(f"head_kind needs streaming=StreamingMask(...), got {streaming!r}")
    if out is None:
        out = torch.empty_like(q)
    if T == 0 or n_p == 0:
        return out
    dummy = cu_seqlens_q
    m = streaming if stream else StreamingMask(0, 0, 1, 1)
    grid = (triton.cdiv(max(1, max_seqlen_q), block_m), n_p, Hq)
    _prefill_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, cu_seqlens_k,
        k_scale if is_fp8 else dummy, v_scale if is_fp8 else dummy, head_kind if stream else dummy, out, scale,
        m.sink_end, m.window_tokens, m.block_m, m.block_n,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=Hq // Hkv, HEAD_DIM=D, BLOCK_SIZE=BS, BLOCK_M=block_m, BLOCK_N=block_n, IS_FP8=is_fp8,
        DOT_T=dot_dtype(FP8_DOT if is_fp8 else k_cache.dtype), STREAM=stream,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


# -------------------------------------------------------------------------------- reference


def reference_paged_attention(
    q: torch.Tensor,  # (n_q, Hq, D) queries of one sequence, at positions ctx - n_q .. ctx - 1
    k_cache: torch.Tensor, v_cache: torch.Tensor,  # (num_blocks, BS, Hkv, D)
    block_table: torch.Tensor,  # (max_blocks,) int
    ctx: int,
    scale: float,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
    pages: torch.Tensor | None = None,  # (Hkv, n) logical pages to attend (decode, Quest); None = all
    key_mask: torch.Tensor | None = None,  # (Hq, n_q, ctx) bool, further restricts (streaming heads)
) -> torch.Tensor:  # (n_q, Hq, D) float32
    """Naive float32 causal attention over the paged context of one sequence."""
    BS, Hkv = k_cache.shape[1], k_cache.shape[2]
    n_blocks = -(-ctx // BS)
    blocks = block_table[:n_blocks].long()
    k = k_cache[blocks].float().reshape(-1, Hkv, k_cache.shape[-1])[:ctx]  # (ctx, Hkv, D)
    v = v_cache[blocks].float().reshape(-1, Hkv, v_cache.shape[-1])[:ctx]
    if k_scale is not None:
        k = k * k_scale.float()[None, :, None]
        v = v * v_scale.float()[None, :, None]
    n_q, Hq, _ = q.shape
    g = Hq // Hkv
    k = k.repeat_interleave(g, 1).transpose(0, 1)  # (Hq, ctx, D)
    v = v.repeat_interleave(g, 1).transpose(0, 1)
    s = torch.einsum("qhd,hkd->hqk", q.float(), k) * scale  # (Hq, n_q, ctx)
    pos = torch.arange(ctx)
    allowed = pos[None, :] <= (ctx - n_q + torch.arange(n_q))[:, None]  # (n_q, ctx)
    allowed = allowed[None].expand(Hq, -1, -1).clone()
    if pages is not None:
        keep = torch.zeros(Hkv, ctx, dtype=torch.bool)
        for h in range(Hkv):
            for p in pages[h].tolist():
                keep[h, p * BS:(p + 1) * BS] = True
        allowed &= keep.repeat_interleave(g, 0)[:, None, :]
    if key_mask is not None:
        allowed &= key_mask
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,hkd->qhd", s.softmax(-1), v)
