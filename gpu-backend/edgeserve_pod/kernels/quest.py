"""Quest query-aware page selection for decode (Tang et al., 2024), extended to batch > 1, GQA
and the paged cache.

A Quest page is one KV block (block_size tokens). Per physical block and kv head we keep the
element-wise min and max of its keys, updated at KV write (`update_page_minmax`):
    kmin, kmax: (num_blocks, Hkv, D), bf16 (or the cache's float dtype when it is float32)
Each decode step scores every logical page of every sequence by the upper bound on q·k
    score[b, kvh, p] = max_{g in group(kvh)} Σ_d max(q_gd · kmin_pd, q_gd · kmax_pd)
                     = max_g ( q⁺_g · kmax_p + q⁻_g · kmin_p )        (q⁺ = max(q, 0), q⁻ = min(q, 0))
(the second form turns the bound into two small matmuls). GQA: the kv head's pages are shared by
its q heads, so the group's bound is the max of theirs. The first and last pages always score
+inf (attention sink, and the page being written); pages past the context score -inf.
`select_pages` keeps the top `budget // block_size` pages per (sequence, kv head); the decode
kernel in paged_attention.py then visits only those.

Reference: `reference_scores` (float32 torch); tests in tests/kernels/test_quest.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .paged_attention import dot_dtype


def update_page_minmax(
    k: torch.Tensor,  # (T, Hkv, D) new keys (before any fp8 quantisation)
    slot_mapping: torch.Tensor,  # (T,) int64 block * BS + row
    kmin: torch.Tensor,  # (num_blocks, Hkv, D)
    kmax: torch.Tensor,
    block_size: int,
) -> None:
    """Fold the new keys into their blocks' min/max. A block whose row 0 is written in this
    step starts afresh (it was just allocated); others extend their running min/max. Pure
    tensor ops, no host sync."""
    blk = slot_mapping // block_size  # (T,)
    starts = torch.zeros(kmin.shape[0], dtype=torch.int32, device=k.device)
    starts.scatter_reduce_(0, blk, (slot_mapping % block_size == 0).to(torch.int32), "amax")  # graph-safe
    fresh = (starts[blk] > 0)[:, None, None]  # (T, 1, 1)
    kk = k.to(kmin.dtype)
    src_min = torch.where(fresh, kk, torch.minimum(kk, kmin[blk]))
    src_max = torch.where(fresh, kk, torch.maximum(kk, kmax[blk]))
    kmin.index_reduce_(0, blk, src_min, "amin", include_self=False)
    kmax.index_reduce_(0, blk, src_max, "amax", include_self=False)


def rebuild_page_minmax(
    k_cache: torch.Tensor,  # (num_blocks, BS, Hkv, D), any KV dtype
    blocks: torch.Tensor,  # (n,) int64 full blocks written from outside the model
    kmin: torch.Tensor,  # (num_blocks, Hkv, D)
    kmax: torch.Tensor,
    k_scale: torch.Tensor | None = None,  # (Hkv,) float32 for an fp8 cache
) -> None:
    """The blocks' min/max over their rows, recomputed from the cache (an fp8 cache dequantized
    with its per-head scale, so the bound is on the keys attention reads). For a float cache this
    equals what `update_page_minmax` keeps (min/max commute with the rounding to the cache dtype);
    for fp8 it differs from it by the e4m3 rounding, since the write sees the keys before
    quantisation. Tests: tests/kernels/test_quest_rebuild.py."""
    k = k_cache[blocks].float()  # (n, BS, Hkv, D)
    if k_scale is not None:
        k = k * k_scale[None, None, :, None]
    kmin[blocks] = k.amin(1).to(kmin.dtype)
    kmax[blocks] = k.amax(1).to(kmax.dtype)


@triton.jit
def _score_kernel(
    Q,  # (B, Hq, D)
    KMin, KMax,  # (num_blocks, Hkv, D)
    BlockTable,  # (B, max_blocks) int32
    ContextLens,  # (B,) int32
    Scores,  # (B, Hkv, max_pages) float32
    Skip,  # (B,) int32: 1 = this sequence reuses its previous selection (HAS_SKIP only)
    stride_qb, stride_qh,
    stride_mb, stride_mh,
    stride_bt,
    stride_sb, stride_sh,
    max_pages,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_P: tl.constexpr, DOT_T: tl.constexpr, HAS_SKIP: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    pb = tl.program_id(2)
    if HAS_SKIP:
        if tl.load(Skip + b) != 0:
            return
    ctx = tl.load(ContextLens + b)
    n_pages = (ctx + BLOCK_SIZE - 1) // BLOCK_SIZE
    offs_p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    g_mask = offs_g < GROUP
    p_ok = offs_p < n_pages
    q = tl.load(Q + b * stride_qb + (kvh * GROUP + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None], other=0.0).to(tl.float32)
    q_pos = tl.maximum(q, 0.0).to(DOT_T)
    q_neg = tl.minimum(q, 0.0).to(DOT_T)
    phys = tl.load(BlockTable + b * stride_bt + offs_p, mask=p_ok, other=0).to(tl.int64)
    rows = phys[:, None] * stride_mb + kvh * stride_mh + offs_d[None, :]
    kmax = tl.load(KMax + rows, mask=p_ok[:, None], other=0.0).to(DOT_T)  # (BLOCK_P, D)
    kmin = tl.load(KMin + rows, mask=p_ok[:, None], other=0.0).to(DOT_T)
    s = tl.dot(q_pos, tl.trans(kmax)) + tl.dot(q_neg, tl.trans(kmin))  # (GROUP_PAD, BLOCK_P)
    s = tl.where(g_mask[:, None], s, float("-inf"))
    score = tl.max(s, 0)
    score = tl.where((offs_p == 0) | (offs_p == n_pages - 1), float("inf"), score)
    score = tl.where(p_ok, score, float("-inf"))
    tl.store(Scores + b * stride_sb + kvh * stride_sh + offs_p, score, mask=offs_p < max_pages)


def quest_scores(
    q: torch.Tensor,  # (B, Hq, D)
    kmin: torch.Tensor,  # (num_blocks, Hkv, D)
    kmax: torch.Tensor,
    block_tables: torch.Tensor,  # (B, max_blocks) int32
    context_lens: torch.Tensor,  # (B,) int32
    block_size: int,
    block_p: int = 64,
    out: torch.Tensor | None = None,
    skip: torch.Tensor | None = None,  # (B,) bool/int: rows left unscored (their selection is reused)
) -> torch.Tensor:  # (B, Hkv, max_blocks) float32
    B, Hq, D = q.shape
    nb, Hkv, Dm = kmin.shape
    if kmax.shape != kmin.shape or Dm != D or Hq % Hkv:
        raise ValueError(f"kmin/kmax must be (num_blocks, Hkv, D={D}) with Hq % Hkv == 0, got "
                         f"{tuple(kmin.shape)} / {tuple(kmax.shape)} for q {tuple(q.shape)}")
    if kmin.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q and kmin/kmax must be contiguous in head_dim")
    max_pages = block_tables.shape[1]
    if out is None:
        out = torch.empty(B, Hkv, max_pages, device=q.device, dtype=torch.float32)
    block_p = max(16, min(block_p, triton.next_power_of_2(max_pages)))
    _score_kernel[(B, Hkv, triton.cdiv(max_pages, block_p))](
        q, kmin, kmax, block_tables, context_lens, out,
        context_lens if skip is None else skip.to(torch.int32).contiguous(),
        q.stride(0), q.stride(1), kmin.stride(0), kmin.stride(1), block_tables.stride(0),
        out.stride(0), out.stride(1), max_pages,
        GROUP=Hq // Hkv, GROUP_PAD=max(16, triton.next_power_of_2(Hq // Hkv)), HEAD_DIM=D,
        BLOCK_SIZE=block_size, BLOCK_P=block_p, DOT_T=dot_dtype(kmin.dtype), HAS_SKIP=skip is not None,
    )
    return out


@triton.jit
def _topk_kernel(
    Scores,  # (B, Hkv, max_pages) float32
    ContextLens,  # (B,) int32
    KPerSeq,  # (B,) int32 pages wanted per sequence (<= K)
    PageIdx,  # (B, Hkv, K) int32 out
    NumSel,  # (B, Hkv) int32 out
    Skip,  # (B,) int32: 1 = leave this row's PageIdx/NumSel as they are (HAS_SKIP only)
    max_pages, K,
    BLOCK_SIZE: tl.constexpr, P_PAD: tl.constexpr, HAS_SKIP: tl.constexpr,
):
    """Radix select on the top 16 bits of an order-preserving key (bf16 precision), by two 256-bin
    histograms (top byte, then the low byte among keys whose top byte is the threshold's) and
    their suffix sums: four block reductions where a bit-by-bit search needs sixteen (one program
    per (sequence, kv head), so at batch 1 these dependent reductions set the time). Then the
    winners are compacted in ascending page order with a prefix sum; scores equal to 16 bits at the
    threshold are taken lowest page first."""
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    if HAS_SKIP:
        if tl.load(Skip + b) != 0:
            return
    n_pages = (tl.load(ContextLens + b) + BLOCK_SIZE - 1) // BLOCK_SIZE
    k_eff = tl.minimum(tl.load(KPerSeq + b), n_pages)
    offs = tl.arange(0, P_PAD)
    ok = offs < tl.minimum(n_pages, max_pages)
    x = tl.load(Scores + (b * tl.num_programs(1) + kvh) * max_pages + offs, mask=ok, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.uint32, bitcast=True) ^ 0x80000000  # monotonic in x
    key = (key >> 16).to(tl.int32)
    bins = tl.arange(0, 256)
    # count_ge[v]: keys whose byte is >= v; the threshold byte is the largest v with count_ge >= k_eff
    hi_b = key >> 8
    h1 = tl.histogram(hi_b, 256, mask=ok)
    hi = tl.sum(((tl.sum(h1, 0) - tl.cumsum(h1, 0) + h1) >= k_eff).to(tl.int32), 0) - 1
    above = tl.sum(tl.where(bins > hi, h1, 0), 0)  # keys whose top byte is above the threshold's
    h2 = tl.histogram(key & 255, 256, mask=ok & (hi_b == hi))
    lo = tl.sum((above + tl.sum(h2, 0) - tl.cumsum(h2, 0) + h2 >= k_eff).to(tl.int32), 0) - 1
    thr = hi * 256 + lo
    gt = ok & (key > thr)
    eq = ok & (key == thr)
    need_eq = k_eff - tl.sum(gt.to(tl.int32), 0)
    take = gt | (eq & (tl.cumsum(eq.to(tl.int32), 0) <= need_eq))
    pos = tl.cumsum(take.to(tl.int32), 0) - 1
    tl.store(PageIdx + (b * tl.num_programs(1) + kvh) * K + pos, offs, mask=take)
    tl.store(NumSel + b * tl.num_programs(1) + kvh, k_eff)


def select_pages(
    scores: torch.Tensor,  # (B, Hkv, max_pages) float32 from quest_scores
    context_lens: torch.Tensor,  # (B,) int32
    budget_tokens: int,
    block_size: int,
    method: str = "triton",
    budget_per_seq: torch.Tensor | None = None,  # (B,) int32 tokens, <= budget_tokens
    skip: torch.Tensor | None = None,  # (B,) bool: keep these rows of `out` as they are (triton only)
    out: tuple[torch.Tensor, torch.Tensor] | None = None,  # (page_idx, num_sel) to write into
) -> tuple[torch.Tensor, torch.Tensor]:  # page_idx (B, Hkv, k) int32, num_sel (B, Hkv) int32
    """Top pages within the token budget; the first num_sel entries of each row are used.
    method "triton": radix-select kernel, pages in ascending order, optional per-sequence budgets.
    "torch": torch.topk, sorted by score, so the valid pages (finite or +inf scores) come before
    the -inf ones past the context; with budget_per_seq, a row keeps its first k_seq entries."""
    k = max(2, min(budget_tokens // block_size, scores.shape[-1]))
    if method == "triton":
        B, H, P = scores.shape
        if not scores.is_contiguous():
            raise ValueError("scores must be contiguous (B, Hkv, max_pages)")
        if out is None:
            idx = torch.empty(B, H, k, dtype=torch.int32, device=scores.device)  # past num_sel: never read
            num_sel = torch.empty(B, H, dtype=torch.int32, device=scores.device)
        else:
            idx, num_sel = out
            if idx.shape != (B, H, k) or num_sel.shape != (B, H) or not (idx.is_contiguous() and num_sel.is_contiguous()):
                raise ValueError(f"out must be contiguous (B, Hkv, {k}) and (B, Hkv) int32 tensors")
        p_pad = max(16, triton.next_power_of_2(P))
        if budget_per_seq is None:
            k_seq = torch.full((B,), k, dtype=torch.int32, device=scores.device)
        else:
            k_seq = torch.clamp(budget_per_seq // block_size, min=2, max=k).to(torch.int32)
        _topk_kernel[(B, H)](scores, context_lens, k_seq, idx, num_sel,
                             context_lens if skip is None else skip.to(torch.int32).contiguous(), P, k,
                             BLOCK_SIZE=block_size, P_PAD=p_pad, HAS_SKIP=skip is not None,
                             num_warps=max(4, min(16, p_pad // 512)))
        return idx, num_sel
    if method != "torch" or skip is not None or out is not None:
        raise ValueError(f"method must be 'triton' (or 'torch' without skip/out), got {method!r}")
    idx = torch.topk(scores, k, dim=-1, sorted=True).indices.to(torch.int32)
    n_pages = (context_lens + block_size - 1) // block_size  # (B,)
    k_seq = k if budget_per_seq is None else torch.clamp(budget_per_seq // block_size, min=2, max=k)
    num_sel = torch.minimum(n_pages, torch.as_tensor(k_seq, device=n_pages.device)).to(torch.int32)
    return idx, num_sel[:, None].expand(-1, scores.shape[1]).contiguous()


def torch_quest_scores(q, kmin, kmax, block_tables, context_lens, block_size) -> torch.Tensor:
    """quest_scores in batched torch (the CPU path of the sparse backend): same bound, same
    forced first/last pages, -inf past the context. q (B, Hq, D) -> (B, Hkv, max_pages) float32."""
    B, Hq, D = q.shape
    Hkv = kmin.shape[1]
    P = block_tables.shape[1]
    bt = block_tables.long()
    lo, hi = kmin[bt].float(), kmax[bt].float()  # (B, P, Hkv, D)
    qg = q.float().view(B, Hkv, Hq // Hkv, D)
    s = (torch.einsum("bhgd,bphd->bhgp", qg.clamp(min=0), hi)
         + torch.einsum("bhgd,bphd->bhgp", qg.clamp(max=0), lo)).amax(2)  # (B, Hkv, P)
    n_pages = ((context_lens.long() + block_size - 1) // block_size)[:, None, None]
    p = torch.arange(P, device=q.device)[None, None, :]
    s = torch.where((p == 0) | (p == n_pages - 1), float("inf"), s)
    return torch.where(p < n_pages, s, float("-inf"))


def reference_scores(q, kmin, kmax, block_table, ctx, block_size) -> torch.Tensor:
    """float32 Quest bound for one sequence: q (Hq, D) -> (Hkv, n_pages), first/last = +inf."""
    Hq, D = q.shape
    Hkv = kmin.shape[1]
    n = -(-ctx // block_size)
    blocks = block_table[:n].long()
    lo, hi = kmin[blocks].float(), kmax[blocks].float()  # (n, Hkv, D)
    qg = q.float().view(Hkv, Hq // Hkv, 1, D)
    bound = torch.maximum(qg * lo.permute(1, 0, 2)[:, None], qg * hi.permute(1, 0, 2)[:, None]).sum(-1)
    s = bound.amax(1)  # (Hkv, n)
    s[:, 0] = float("inf")
    s[:, n - 1] = float("inf")
    return s
