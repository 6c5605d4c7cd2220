"""Unified block-sparse prefill attention (LServe, Yang et al., 2025), in Triton.

One kernel, driven by lists of KV block indices, not by per-element masks. Each head follows one
of two patterns, chosen per head by `head_kind` (Hq,) int32:
    0 = dense causal        (retrieval heads): every KV block up to the diagonal
    1 = sink + local window (streaming heads): the first ceil(sink / BLOCK_N) blocks, then the
        blocks from the one holding (q_block_start - window) up to the diagonal
    2 = skip: the kernel leaves that head's output untouched (another kernel computes it)
The window is block-granular, as in LServe: a query row sees at least `window` tokens back and
at most window + BLOCK_M + BLOCK_N. The same kernel with all heads dense is our dense causal
baseline. Only the diagonal blocks get an element mask (causal), the rest run unmasked.

Plan once, run many (flashinfer style): `plan_block_sparse(max_len, ...)` builds
    block_idx (2, n_qb, max_nb) int32   KV block numbers per (pattern, q block), ascending
    n_full, n_tot (2, n_qb) int32       entries needing no mask / all entries
The lists depend only on the q block number, so one plan serves every sequence of a packed
varlen batch (cu_seqlens), each starting at position 0 (no cached prefix; after a cached prefix
the sparse backend runs paged_attention.paged_prefill with head kinds and a StreamingMask, the
same pattern at absolute positions).

A Hopper variant (TMA tensor descriptors, optional warp specialization) was built and measured
on the H100: slower than this kernel (32 heads, 32K, dense 20.38 ms vs 19.49; 50% streaming
12.32 vs 11.66; bench/results/sparse-attention/2026-11-22-h100-prefill-tma.json), and its
warp-specialized and 16-row-tile forms failed the float32 check on the GPU. It was removed.

Reference: `reference_block_sparse` (float32 torch, element mask from the same block lists);
tests in tests/kernels/test_block_sparse_prefill.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .paged_attention import dot_dtype, online_softmax_step



@dataclass
class BlockSparsePlan:
    block_idx: torch.Tensor  # (2, n_qb, max_nb) int32
    n_full: torch.Tensor  # (2, n_qb) int32
    n_tot: torch.Tensor  # (2, n_qb) int32
    block_m: int
    block_n: int
    max_len: int


def plan_block_sparse(max_len: int, sink_tokens: int, window_tokens: int, block_m: int = 128, block_n: int = 64,
                      device: torch.device | str = "cpu") -> BlockSparsePlan:
    if block_m % block_n:
        raise ValueError(f"block_m ({block_m}) must be a multiple of block_n ({block_n})")
    if max_len < 1 or sink_tokens < 0 or window_tokens < 0:
        raise ValueError(f"need max_len >= 1, sink/window >= 0; got {max_len}, {sink_tokens}, {window_tokens}")
    n_qb = triton.cdiv(max_len, block_m)
    qb = torch.arange(n_qb)
    last = ((qb + 1) * block_m - 1) // block_n  # (n_qb,) diagonal's last kv block
    first_diag = (qb * block_m) // block_n  # kv blocks >= this overlap the diagonal: masked
    max_nb = int(last[-1]) + 1
    j = torch.arange(max_nb)
    # pattern 0: dense causal
    dense = j[None, :].expand(n_qb, -1)
    n_tot_d = last + 1
    n_full_d = first_diag
    # pattern 1: sink blocks, then local blocks first_local..last
    n_sink = triton.cdiv(sink_tokens, block_n)
    first_local = torch.clamp((qb * block_m - window_tokens) // block_n, min=0)
    first_local = torch.maximum(first_local, torch.full_like(first_local, n_sink))
    sink_cnt = torch.clamp(torch.minimum(torch.full_like(last, n_sink), last + 1), min=0)
    local_cnt = torch.clamp(last + 1 - first_local, min=0)
    stream = torch.where(j[None, :] < sink_cnt[:, None], j[None, :], first_local[:, None] + j[None, :] - sink_cnt[:, None])
    n_tot_s = sink_cnt + local_cnt
    stream = torch.where(j[None, :] < n_tot_s[:, None], stream, 0)
    # entries below the diagonal need no mask; they come first (ascending lists)
    n_full_s = torch.minimum(sink_cnt, first_diag) + torch.clamp(first_diag - first_local, min=0)
    dense = torch.where(j[None, :] < n_tot_d[:, None], dense, 0)
    block_idx = torch.stack([dense, stream]).to(torch.int32).contiguous()
    n_full = torch.stack([n_full_d, n_full_s]).to(torch.int32).contiguous()
    n_tot = torch.stack([n_tot_d, n_tot_s]).to(torch.int32).contiguous()
    # invariant: every list ends with the q block's block_m // block_n diagonal (masked) blocks
    assert bool((n_tot - n_full == block_m // block_n).all()), "plan: masked tail is not block_m // block_n long"
    return BlockSparsePlan(block_idx.to(device), n_full.to(device), n_tot.to(device), block_m, block_n, max_len)


@triton.jit
def _inner(acc, l_i, m_i, q, K, V, k_base, v_base, stride_kt, stride_vt, BlockIdx, i_lo, i_hi, q_pos, seq_len,
           qk_scale, offs_d, MASK: tl.constexpr, BLOCK_N: tl.constexpr, DOT_T: tl.constexpr):
    for i in range(i_lo, i_hi):
        j = tl.load(BlockIdx + i)
        t = j * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        if MASK:
            t_ok = t < seq_len
            k = tl.load(K + k_base + t[:, None] * stride_kt + offs_d[None, :], mask=t_ok[:, None], other=0.0)
            v = tl.load(V + v_base + t[:, None] * stride_vt + offs_d[None, :], mask=t_ok[:, None], other=0.0)
        else:
            k = tl.load(K + k_base + t[:, None] * stride_kt + offs_d[None, :])
            v = tl.load(V + v_base + t[:, None] * stride_vt + offs_d[None, :])
        s = tl.dot(q, tl.trans(k.to(DOT_T))) * qk_scale  # (BLOCK_M, BLOCK_N)
        if MASK:
            s = tl.where((t[None, :] <= q_pos[:, None]) & t_ok[None, :], s, float("-inf"))
        acc, l_i, m_i = online_softmax_step(s, v, acc, l_i, m_i, DOT_T)
    return acc, l_i, m_i


@triton.jit
def _block_sparse_kernel(
    Q, K, V, Out,  # Q/Out (T, Hq, D), K/V (T, Hkv, D): any strides, D contiguous
    CuSeq,  # (n_seq + 1,) int32
    HeadKind,  # (Hq,) int32
    BlockIdx, NFull, NTot,  # plan
    sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    n_qb, max_nb,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_T: tl.constexpr,
):
    qb = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first: better tail balance
    h = tl.program_id(1)
    sq = tl.program_id(2)
    start = tl.load(CuSeq + sq)
    seq_len = tl.load(CuSeq + sq + 1) - start
    if qb * BLOCK_M >= seq_len:
        return
    kvh = h // GROUP
    kind = tl.load(HeadKind + h)
    if kind == 2:
        return
    row = kind * n_qb + qb
    n_full = tl.load(NFull + row)
    n_tot = tl.load(NTot + row)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    m_ok = offs_m < seq_len
    rows = (start + offs_m).to(tl.int64)  # packed token rows: rows * stride_qt passes 2^31 at ~512K tokens (Hq*D 4096)
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=m_ok[:, None], other=0.0).to(DOT_T)
    qk_scale = sm_scale * 1.44269504
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = start.to(tl.int64) * stride_kt + kvh * stride_kh
    v_base = start.to(tl.int64) * stride_vt + kvh * stride_vh
    idx = BlockIdx + row * max_nb
    acc, l_i, m_i = _inner(acc, l_i, m_i, q, K, V, k_base, v_base, stride_kt, stride_vt, idx, 0, n_full,
                           offs_m, seq_len, qk_scale, offs_d, False, BLOCK_N, DOT_T)
    acc, l_i, m_i = _inner(acc, l_i, m_i, q, K, V, k_base, v_base, stride_kt, stride_vt, idx, n_full, n_tot,
                           offs_m, seq_len, qk_scale, offs_d, True, BLOCK_N, DOT_T)
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             acc.to(Out.dtype.element_ty), mask=m_ok[:, None])


def block_sparse_prefill(
    q: torch.Tensor,  # (T, Hq, D) packed sequences, each from position 0
    k: torch.Tensor,  # (T, Hkv, D)
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,  # (n_seq + 1,) int32
    max_seqlen: int,
    head_kind: torch.Tensor,  # (Hq,) int32: 0 dense causal, 1 streaming, 2 skip
    plan: BlockSparsePlan,
    scale: float,
    num_warps: int = 8,
    num_stages: int = 3,
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # (T, Hq, D)
    T, Hq, D = q.shape
    if k.shape != v.shape or k.shape[0] != T or k.shape[2] != D or Hq % k.shape[1]:
        raise ValueError(f"q (T, Hq, D) = {tuple(q.shape)}, k/v (T, Hkv, D) = {tuple(k.shape)}/{tuple(v.shape)} disagree")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q/k/v must be contiguous in head_dim")
    if head_kind.shape != (Hq,) or head_kind.dtype != torch.int32:
        raise ValueError(f"head_kind must be ({Hq},) int32, got {tuple(head_kind.shape)} {head_kind.dtype}")
    if q.is_cuda and min(plan.block_m, plan.block_n, D) < 16:
        raise ValueError(f"tl.dot on the GPU needs tiles of at least 16: block_m {plan.block_m}, block_n "
                         f"{plan.block_n}, head_dim {D}")
    if max_seqlen > plan.max_len:
        raise ValueError(f"plan covers {plan.max_len} tokens, batch needs {max_seqlen}: plan again")
    if out is None:
        out = torch.empty_like(q)
    n_seq = cu_seqlens.numel() - 1
    if T == 0 or n_seq == 0:
        return out
    n_qb = plan.block_idx.shape[1]
    grid = (triton.cdiv(max_seqlen, plan.block_m), Hq, n_seq)
    _block_sparse_kernel[grid](
        q, k, v, out, cu_seqlens, head_kind, plan.block_idx, plan.n_full, plan.n_tot, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        n_qb, plan.block_idx.shape[2],
        GROUP=Hq // k.shape[1], HEAD_DIM=D, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, DOT_T=dot_dtype(q.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
    return out


def plan_mask(plan: BlockSparsePlan, kind: int, length: int) -> torch.Tensor:
    """(length, length) bool: the element mask the plan's block lists mean for one pattern."""
    bi, nt = plan.block_idx[kind].cpu(), plan.n_tot[kind].cpu()
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for qb in range(triton.cdiv(length, plan.block_m)):
        rows = slice(qb * plan.block_m, min(length, (qb + 1) * plan.block_m))
        for j in bi[qb, :nt[qb]].tolist():
            allowed[rows, j * plan.block_n:(j + 1) * plan.block_n] = True
    return allowed & torch.ones(length, length, dtype=torch.bool).tril()


def reference_block_sparse(q, k, v, head_kind, plan, scale) -> torch.Tensor:
    """float32 reference for one sequence: q (L, Hq, D), k/v (L, Hkv, D) -> (L, Hq, D)."""
    L, Hq, _ = q.shape
    g = Hq // k.shape[1]
    kk = k.float().repeat_interleave(g, 1)
    vv = v.float().repeat_interleave(g, 1)
    s = torch.einsum("qhd,khd->hqk", q.float(), kk) * scale
    masks = torch.stack([plan_mask(plan, 0, L), plan_mask(plan, 1, L)])  # (2, L, L)
    s = s.masked_fill(~masks[head_kind.long().cpu()], float("-inf"))
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), vv)
