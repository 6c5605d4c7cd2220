"""Block-sparse prefill attention for Hopper (sm_90+): the same plan and the same result as
`block_sparse_prefill.py`'s pointer kernel, with tensor-descriptor (TMA) tiles.

What differs from the pointer kernel, and why (timed against it and SDPA by
bench/sparse_attention.py `--only prefill`):
- Q, K, V and Out move through tensor descriptors made on the device, one per (sequence, head):
  a 2-D view [seq_len, D] with the row stride of the packed (T, H, D) tensor. The TMA engine
  does the address math that the pointer kernel spent 64 64-bit addresses per thread per tile
  on, writes straight into the swizzled shared memory that wgmma reads, and zero-fills rows past
  the sequence end, so varlen needs no load masks; stores clip at the sequence end.
- GQA: the K/V descriptors point at kv head h // GROUP; nothing is replicated.
- Without warp specialization: one loop over the unmasked blocks with no mask at all, then the
  diagonal (always BLOCK_M // BLOCK_N masked blocks at the end of a list) as straight-line code
  with a finite -1e6 mask (exp2 of it underflows to exactly 0). Finite masking is safe because the
  first block a row visits holds a key it may see, so m_i is finite after one block.
- WARP_SPECIALIZE (launch with num_warps=4): Triton 3.6's Hopper pass then makes a TMA producer
  warpgroup and two consumer warpgroups of 64 rows each (FA3's layout). It only manages this when
  the loop is the kernel's only attention code (a second loop, blocks outside the loop or an
  early return abort the pass, checked by compiling for sm_90), so this path runs one loop over
  the whole list with the causal mask on every block: one compare and one select per score.
- The softmax scale is one FFMA with the max subtraction (`qk * qk_scale - m_ij`), in exp2.
- Not done: lazy (thresholded) rescaling of acc. On Hopper acc lives in registers and the
  rescale is 64 FMULs per thread per tile next to 64 exp2; skipping it would need a branch on a
  max over the whole tile (a cross-warp reduction per tile), which costs more than it saves.

Needs a Triton allocator for the descriptors' global scratch (set in the wrapper) and 16-byte
aligned rows and head strides; `supported()` says when it applies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .paged_attention import dot_dtype


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> bool:
    """TMA needs sm_90+, 2-byte dtypes here, 16-byte aligned bases, row and head strides."""
    if not q.is_cuda or torch.cuda.get_device_capability(q.device)[0] < 9:
        return False
    if q.dtype not in (torch.bfloat16, torch.float16) or not (q.dtype == k.dtype == v.dtype == out.dtype):
        return False
    es = q.element_size()
    for t in (q, k, v, out):
        if t.data_ptr() % 16 or (t.stride(0) * es) % 16 or (t.stride(1) * es) % 16 or t.stride(2) != 1:
            return False
    return q.shape[2] in (64, 128, 256)


@triton.jit
def _attend_block(acc, l_i, m_i, q, desc_k, desc_v, j, q_lim, qk_scale,
                  MASK: tl.constexpr, BLOCK_N: tl.constexpr, DOT_T: tl.constexpr):
    """One online-softmax update over kv block j (flash-attention 2 in exp2). q_lim (BLOCK_M,):
    the last key each row may see, min(position, seq_len - 1)."""
    k = desc_k.load([j * BLOCK_N, 0])  # (BLOCK_N, D); rows past seq_len read as 0
    qk = tl.dot(q, k.to(DOT_T).T)  # (BLOCK_M, BLOCK_N), unscaled
    if MASK:
        ok = tl.arange(0, BLOCK_N)[None, :] <= (q_lim - j * BLOCK_N)[:, None]
        qk = qk * qk_scale + tl.where(ok, 0.0, -1.0e6)
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        qk = qk - m_ij[:, None]
    else:
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        qk = qk * qk_scale - m_ij[:, None]
    p = tl.math.exp2(qk)
    alpha = tl.math.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = desc_v.load([j * BLOCK_N, 0])
    acc = tl.dot(p.to(DOT_T), v.to(DOT_T), acc)
    return acc, l_i, m_ij


@triton.jit
def _block_sparse_tma_kernel(
    Q, K, V, Out,  # Q/Out (T, Hq, D), K/V (T, Hkv, D): 16-byte aligned strides, D contiguous
    CuSeq,  # (n_seq + 1,) int32
    HeadKind,  # (Hq,) int32
    BlockIdx, NFull,  # plan (NTot is not read: the masked tail is BLOCK_M // BLOCK_N long)
    sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    n_qb, max_nb,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_T: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    qb = tl.num_programs(0) - 1 - tl.program_id(0)  # longest rows first: better tail balance
    h = tl.program_id(1)
    sq = tl.program_id(2)
    start = tl.load(CuSeq + sq)
    seq_len = tl.load(CuSeq + sq + 1) - start
    row = tl.load(HeadKind + h) * n_qb + qb
    # a q block past a short sequence's end computes on zero rows and stores nothing; no early
    # return, which Triton 3.6's Hopper warp specialization cannot take
    live = qb * BLOCK_M < seq_len
    n_full = tl.where(live, tl.load(NFull + row), 0)
    n_tot = n_full + BLOCK_M // BLOCK_N
    start64 = start.to(tl.int64)
    h64 = h.to(tl.int64)  # head strides of (H, T, D) views times H can pass 2^31
    kvh64 = (h // GROUP).to(tl.int64)
    rows = tl.maximum(seq_len, 1)  # descriptor extent (rows past seq_len read as 0)
    desc_q = tl.make_tensor_descriptor(Q + start64 * stride_qt + h64 * stride_qh, shape=[rows, HEAD_DIM],
                                       strides=[stride_qt, 1], block_shape=[BLOCK_M, HEAD_DIM])
    desc_k = tl.make_tensor_descriptor(K + start64 * stride_kt + kvh64 * stride_kh, shape=[rows, HEAD_DIM],
                                       strides=[stride_kt, 1], block_shape=[BLOCK_N, HEAD_DIM])
    desc_v = tl.make_tensor_descriptor(V + start64 * stride_vt + kvh64 * stride_vh, shape=[rows, HEAD_DIM],
                                       strides=[stride_vt, 1], block_shape=[BLOCK_N, HEAD_DIM])
    q = desc_q.load([qb * BLOCK_M, 0]).to(DOT_T)  # (BLOCK_M, D); rows past seq_len read as 0
    q_lim = tl.minimum(qb * BLOCK_M + tl.arange(0, BLOCK_M), seq_len - 1)
    qk_scale = sm_scale * 1.44269504  # exp2 domain
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    idx = BlockIdx + row * max_nb
    if WARP_SPECIALIZE:
        # Triton 3.6's Hopper warp specialization splits the 128 rows over two consumer warpgroups
        # only when the loop is the sole attention code: one loop over the whole list, the causal
        # mask on every block (one compare and one select per score)
        for i in tl.range(0, n_tot, warp_specialize=True):
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, desc_k, desc_v, tl.load(idx + i), q_lim, qk_scale,
                                          True, BLOCK_N, DOT_T)
    else:
        for i in tl.range(0, n_full):  # below the diagonal: no mask
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, desc_k, desc_v, tl.load(idx + i), q_lim, qk_scale,
                                          False, BLOCK_N, DOT_T)
        # the diagonal: a live q block's list ends with exactly BLOCK_M // BLOCK_N masked blocks
        # (plan_block_sparse checks it), straight-line code instead of a second loop
        for u in tl.static_range(BLOCK_M // BLOCK_N):
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, desc_k, desc_v, tl.load(idx + n_full + u), q_lim,
                                          qk_scale, True, BLOCK_N, DOT_T)
    acc = acc / l_i[:, None]
    # Out's descriptor spans rows [0, start + seq_len) of the packed batch, so a store clips at this
    # sequence's end; a q block past the end stores at the extent itself, i.e. nothing (a 0-row
    # descriptor for an empty sequence would be invalid)
    o_rows = tl.maximum(start + seq_len, 1)
    desc_o = tl.make_tensor_descriptor(Out + h64 * stride_oh, shape=[o_rows, HEAD_DIM], strides=[stride_ot, 1],
                                       block_shape=[BLOCK_M, HEAD_DIM])
    desc_o.store([tl.where(live, start + qb * BLOCK_M, o_rows), 0], acc.to(Out.dtype.element_ty))


def block_sparse_prefill_tma(q, k, v, cu_seqlens, max_seqlen, head_kind, plan, scale, num_warps=8, num_stages=3,
                             warp_specialize=False, out=None):
    """Arguments as `block_sparse_prefill` (checked there); q/k/v/out must pass `supported()`."""
    T, Hq, D = q.shape
    n_seq = cu_seqlens.numel() - 1
    triton.set_allocator(_scratch)  # descriptor scratch; a ContextVar, so set in the calling context
    grid = (triton.cdiv(max_seqlen, plan.block_m), Hq, n_seq)
    _block_sparse_tma_kernel[grid](
        q, k, v, out, cu_seqlens, head_kind, plan.block_idx, plan.n_full, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        plan.block_idx.shape[1], plan.block_idx.shape[2],
        GROUP=Hq // k.shape[1], HEAD_DIM=D, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, DOT_T=dot_dtype(q.dtype),
        WARP_SPECIALIZE=warp_specialize, num_warps=num_warps, num_stages=num_stages,
    )
    return out
