"""Dense paged decode / prefill kernels vs the float32 torch reference, fresh random inputs."""
import pytest
import torch

from edgeserve_pod.kernels.block_sparse_prefill import plan_block_sparse, plan_mask
from edgeserve_pod.kernels.paged_attention import (FP8, StreamingMask, paged_decode, paged_prefill,
                                                   reference_paged_attention)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def make_cache(num_blocks, bs, hkv, d, dtype, gen):
    k = torch.randn(num_blocks, bs, hkv, d, generator=gen)
    v = torch.randn(num_blocks, bs, hkv, d, generator=gen)
    if dtype == FP8:
        ks = k.abs().amax((0, 1, 3)) / 448.0  # (Hkv,) per-head scale
        vs = v.abs().amax((0, 1, 3)) / 448.0
        return (k / ks[None, None, :, None]).to(FP8), (v / vs[None, None, :, None]).to(FP8), ks, vs
    return k.to(dtype), v.to(dtype), None, None


def random_tables(ctx_lens, bs, num_blocks, gen):
    """Each sequence gets distinct random physical blocks (a shuffled pool)."""
    perm = torch.randperm(num_blocks, generator=gen)
    width = max(-(-c // bs) for c in ctx_lens)
    table = torch.zeros(len(ctx_lens), width, dtype=torch.int32)
    at = 0
    for i, c in enumerate(ctx_lens):
        n = -(-c // bs)
        table[i, :n] = perm[at:at + n]
        at += n
    return table


TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2, FP8: 6e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, FP8])
@pytest.mark.parametrize("hq,hkv,bs", [(4, 2, 16), (8, 1, 8)])
def test_decode_matches_reference(dtype, hq, hkv, bs):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    d = 32
    ctx_lens = [1, 37, 130]
    k_cache, v_cache, ks, vs = make_cache(64, bs, hkv, d, dtype, gen)
    table = random_tables(ctx_lens, bs, 64, gen)
    q = torch.randn(len(ctx_lens), hq, d, generator=gen)
    qd = q.to(torch.bfloat16 if dtype == FP8 else dtype)
    out = paged_decode(qd.to(DEV), k_cache.to(DEV), v_cache.to(DEV), table.to(DEV),
                       torch.tensor(ctx_lens, dtype=torch.int32, device=DEV), d ** -0.5,
                       None if ks is None else ks.to(DEV), None if vs is None else vs.to(DEV),
                       num_splits=3, block_n=16).cpu()
    for i, c in enumerate(ctx_lens):
        ref = reference_paged_attention(qd[i:i + 1], k_cache, v_cache, table[i], c, d ** -0.5, ks, vs)[0]
        torch.testing.assert_close(out[i].float(), ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_decode_selected_pages():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, bs = 4, 2, 32, 8
    ctx_lens = [70, 41]
    k_cache, v_cache, _, _ = make_cache(32, bs, hkv, d, torch.float32, gen)
    table = random_tables(ctx_lens, bs, 32, gen)
    q = torch.randn(2, hq, d, generator=gen)
    pages = torch.tensor([[[0, 3, 8], [8, 1, 0]], [[0, 5, 0], [2, 5, 0]]], dtype=torch.int32)  # (B, Hkv, 3)
    num_sel = torch.tensor([[3, 3], [2, 2]], dtype=torch.int32)
    out = paged_decode(q.to(DEV), k_cache.to(DEV), v_cache.to(DEV), table.to(DEV),
                       torch.tensor(ctx_lens, dtype=torch.int32, device=DEV), d ** -0.5,
                       page_idx=pages.to(DEV), num_sel=num_sel.to(DEV), num_splits=2, block_n=16).cpu()
    for i, c in enumerate(ctx_lens):
        sel = [pages[i, h, :num_sel[i, h]] for h in range(hkv)]
        ref = reference_paged_attention(q[i:i + 1], k_cache, v_cache, table[i], c, d ** -0.5,
                                        pages=torch.stack(sel))[0]
        torch.testing.assert_close(out[i], ref, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, FP8])
def test_prefill_matches_reference_with_cached_prefix(dtype):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, bs = 4, 2, 32, 16
    ctx_lens, new_lens = [50, 19], [50, 7]  # sequence 1 has a cached prefix of 12 tokens
    k_cache, v_cache, ks, vs = make_cache(16, bs, hkv, d, dtype, gen)
    table = random_tables(ctx_lens, bs, 16, gen)
    q = torch.randn(sum(new_lens), hq, d, generator=gen).to(torch.bfloat16 if dtype == FP8 else dtype)
    cu_q = torch.tensor([0, 50, 57], dtype=torch.int32)
    cu_k = torch.tensor([0, 50, 69], dtype=torch.int32)
    out = paged_prefill(q.to(DEV), k_cache.to(DEV), v_cache.to(DEV), table.to(DEV), cu_q.to(DEV), cu_k.to(DEV),
                        50, d ** -0.5, None if ks is None else ks.to(DEV), None if vs is None else vs.to(DEV),
                        block_m=16, block_n=16).cpu()
    for i in range(2):
        qs = q[cu_q[i]:cu_q[i + 1]]
        ref = reference_paged_attention(qs, k_cache, v_cache, table[i], ctx_lens[i], d ** -0.5, ks, vs)
        torch.testing.assert_close(out[cu_q[i]:cu_q[i + 1]].float(), ref, atol=TOL[dtype], rtol=TOL[dtype])


# (sink, window, mask block_m, mask block_n, kernel block_m, kernel block_n): the mask's grid
# finer than, equal to and coarser than the kernel's tiles; no sink; a sink longer than a prompt
STREAM_CASES = [(8, 24, 16, 8, 16, 16), (16, 32, 32, 16, 16, 32), (0, 16, 16, 16, 32, 16), (60, 8, 32, 16, 16, 16)]


@pytest.mark.parametrize("case, dtype", [(c, torch.float32) for c in STREAM_CASES]
                         + [(STREAM_CASES[0], torch.bfloat16), (STREAM_CASES[0], FP8)])
def test_prefill_streaming_heads_match_reference(case, dtype):
    """Streaming heads after a cached prefix see the one-shot block-sparse plan's rows at their
    absolute positions (plan_mask is the reference of that pattern); retrieval heads are the dense
    path's result. Prefixes 83 and 27 are not multiples of the page size; one sequence has none."""
    sink, window, mbm, mbn, bm, bn = case
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, bs = 4, 2, 32, 16
    ctx_lens, new_lens = [120, 61, 40], [37, 61, 13]
    k_cache, v_cache, ks, vs = make_cache(24, bs, hkv, d, dtype, gen)
    table = random_tables(ctx_lens, bs, 24, gen)
    q = torch.randn(sum(new_lens), hq, d, generator=gen).to(torch.bfloat16 if dtype == FP8 else dtype)
    kind = torch.randint(0, 2, (hq,), generator=gen, dtype=torch.int32)
    kind[:2] = torch.tensor([0, 1], dtype=torch.int32)  # both kinds, whatever the draw
    cu_q = torch.tensor([0, 37, 98, 111], dtype=torch.int32)
    cu_k = torch.tensor([0, 120, 181, 221], dtype=torch.int32)
    dev = [None if t is None else t.to(DEV) for t in (q, k_cache, v_cache, table, cu_q, cu_k, ks, vs)]
    args = (*dev[:6], 61, d ** -0.5, *dev[6:])
    mask = StreamingMask(sink, window, mbm, mbn)
    out = paged_prefill(*args, block_m=bm, block_n=bn, head_kind=kind.to(DEV), streaming=mask).cpu()
    dense = paged_prefill(*args, block_m=bm, block_n=bn).cpu()
    plan = plan_block_sparse(max(ctx_lens), sink, window, mbm, mbn)
    stream = kind.bool()
    for i, (c, n) in enumerate(zip(ctx_lens, new_lens)):
        rows = slice(int(cu_q[i]), int(cu_q[i + 1]))
        key_mask = torch.where(stream[:, None, None], plan_mask(plan, 1, c)[c - n:][None], True)  # (Hq, n, c)
        ref = reference_paged_attention(q[rows], k_cache, v_cache, table[i], c, d ** -0.5, ks, vs, key_mask=key_mask)
        torch.testing.assert_close(out[rows].float(), ref, atol=TOL[dtype], rtol=TOL[dtype])
    # retrieval heads: the dense loop's tiles in its order; exact under the interpreter, while a GPU
    # compiles the two walks separately (the no-kinds call is the old kernel: same sm_90 PTX)
    if DEV == "cpu":
        assert torch.equal(out[:, ~stream], dense[:, ~stream])
    else:
        torch.testing.assert_close(out[:, ~stream], dense[:, ~stream], atol=TOL[dtype], rtol=TOL[dtype])
    assert (out[:, stream].float() - dense[:, stream].float()).abs().max() > 0.1  # the mask is in effect


def test_bad_input_is_a_clear_error():
    k = torch.zeros(4, 8, 2, 16, dtype=FP8)
    with pytest.raises(ValueError, match="k_scale"):
        paged_decode(torch.zeros(1, 4, 16), k, k, torch.zeros(1, 1, dtype=torch.int32),
                     torch.ones(1, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match="does not fit"):
        kc = torch.zeros(4, 8, 2, 16)
        paged_decode(torch.zeros(1, 3, 16), kc, kc, torch.zeros(1, 1, dtype=torch.int32),
                     torch.ones(1, dtype=torch.int32), 1.0)
    kc = torch.zeros(4, 8, 2, 16)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match="StreamingMask"):
        paged_prefill(torch.zeros(1, 4, 16), kc, kc, torch.zeros(1, 1, dtype=torch.int32), cu, cu, 1, 1.0,
                      head_kind=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="head_kind"):
        paged_prefill(torch.zeros(1, 4, 16), kc, kc, torch.zeros(1, 1, dtype=torch.int32), cu, cu, 1, 1.0,
                      head_kind=torch.zeros(2, dtype=torch.int32), streaming=StreamingMask(4, 8))
    with pytest.raises(ValueError, match="multiple"):
        StreamingMask(4, 8, block_m=48, block_n=32)
