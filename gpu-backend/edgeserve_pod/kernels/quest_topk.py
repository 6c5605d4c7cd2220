"""Quest page top-k by two 256-bin histograms (radix select on a 16-bit key).

Same contract as quest.select_pages(method="triton"): per (sequence, kv head), the
`k_eff = min(k, pages of the context)` highest-scoring pages, in ascending page order, ties at
the threshold broken lowest page first. The key is the top 16 bits of an order-preserving
encoding of the float32 score (bf16 precision, as the bound itself is computed in bf16).

Why: the first kernel found the threshold bit by bit, 16 counting passes, each a block-wide
reduction; one program per (sequence, kv head) means 8 programs at batch 1, so those dependent
reductions set the time (~15-40 us per decode step at 32K-128K). Here the threshold comes from two
histograms (top byte, then the low byte among keys whose top byte is the threshold's) and their
suffix sums: four reductions instead of sixteen.

Reference: quest.select_pages(method="torch") / reference tests in tests/kernels/test_quest_topk.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _topk_hist_kernel(
    Scores,  # (B, Hkv, max_pages) float32, contiguous
    ContextLens,  # (B,) int32
    KPerSeq,  # (B,) int32 pages wanted per sequence (<= K), read when HAS_KSEQ
    PageIdx,  # (B, Hkv, K) int32 out
    NumSel,  # (B, Hkv) int32 out
    max_pages, K,
    BLOCK_SIZE: tl.constexpr, P_PAD: tl.constexpr, HAS_KSEQ: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    n_pages = (tl.load(ContextLens + b) + BLOCK_SIZE - 1) // BLOCK_SIZE
    if HAS_KSEQ:
        k_eff = tl.minimum(tl.load(KPerSeq + b), n_pages)
    else:
        k_eff = tl.minimum(K, n_pages)
    offs = tl.arange(0, P_PAD)
    ok = offs < tl.minimum(n_pages, max_pages)
    x = tl.load(Scores + (b * tl.num_programs(1) + kvh) * max_pages + offs, mask=ok, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    key = ((bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.uint32, bitcast=True) ^ 0x80000000) >> 16  # monotonic in x
    key = key.to(tl.int32)
    bins = tl.arange(0, 256)
    # pass 1: top byte. count_ge[v] = keys whose top byte >= v; the threshold byte is the largest v
    # with count_ge[v] >= k_eff (count_ge is non-increasing and count_ge[0] = all >= k_eff).
    hi_b = key >> 8
    h1 = tl.histogram(hi_b, 256, mask=ok)
    ge1 = tl.sum(h1, 0) - tl.cumsum(h1, 0) + h1
    hi = tl.sum((ge1 >= k_eff).to(tl.int32), 0) - 1
    above = tl.sum(tl.where(bins > hi, h1, 0), 0)  # keys whose top byte is above the threshold's
    # pass 2: low byte among keys whose top byte equals hi
    h2 = tl.histogram(key & 255, 256, mask=ok & (hi_b == hi))
    ge2 = tl.sum(h2, 0) - tl.cumsum(h2, 0) + h2
    lo = tl.sum((above + ge2 >= k_eff).to(tl.int32), 0) - 1
    thr = hi * 256 + lo
    gt = ok & (key > thr)
    eq = ok & (key == thr)
    need_eq = k_eff - tl.sum(gt.to(tl.int32), 0)
    take = gt | (eq & (tl.cumsum(eq.to(tl.int32), 0) <= need_eq))
    pos = tl.cumsum(take.to(tl.int32), 0) - 1
    tl.store(PageIdx + (b * tl.num_programs(1) + kvh) * K + pos, offs, mask=take)
    tl.store(NumSel + b * tl.num_programs(1) + kvh, k_eff)


def topk_pages(
    scores: torch.Tensor,  # (B, Hkv, max_pages) float32 from quest.quest_scores
    context_lens: torch.Tensor,  # (B,) int32
    budget_tokens: int,
    block_size: int,
    budget_per_seq: torch.Tensor | None = None,  # (B,) int32 tokens, <= budget_tokens
) -> tuple[torch.Tensor, torch.Tensor]:  # page_idx (B, Hkv, k) int32, num_sel (B, Hkv) int32
    k = max(2, min(budget_tokens // block_size, scores.shape[-1]))
    B, H, P = scores.shape
    if not scores.is_contiguous():
        raise ValueError("scores must be contiguous (B, Hkv, max_pages)")
    idx = torch.empty(B, H, k, dtype=torch.int32, device=scores.device)  # past num_sel: never read
    num_sel = torch.empty(B, H, dtype=torch.int32, device=scores.device)
    p_pad = max(256, triton.next_power_of_2(P))
    k_seq = context_lens if budget_per_seq is None else torch.clamp(budget_per_seq // block_size, min=2, max=k).to(torch.int32)
    _topk_hist_kernel[(B, H)](scores, context_lens, k_seq, idx, num_sel, P, k, BLOCK_SIZE=block_size, P_PAD=p_pad,
                              HAS_KSEQ=budget_per_seq is not None, num_warps=max(4, min(16, p_pad // 512)))
    return idx, num_sel
