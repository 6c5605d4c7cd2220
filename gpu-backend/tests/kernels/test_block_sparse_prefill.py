"""Block-sparse prefill vs the float32 reference (mask built from the same block lists), plus an
independent check that the plan's masks are the intended sink + window / causal patterns."""
import pytest
import torch

from edgeserve_pod.kernels.block_sparse_prefill import (block_sparse_prefill, plan_block_sparse, plan_mask,
                                                        reference_block_sparse)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
def test_plan_masks_are_causal_and_sink_window():
    L, bm, bn, sink, win = 100, 16, 8, 5, 20
    plan = plan_block_sparse(L, sink, win, bm, bn)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    assert torch.equal(plan_mask(plan, 0, L), causal)
    m = plan_mask(plan, 1, L)
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    exact = causal & ((j < sink) | (i - j < win))
    assert (m | ~exact).all(), "streaming mask must cover every sink and window token"
    reach = (i - j)[m & (j >= -(-sink // bn) * bn)]
    assert reach.max() < win + bm + bn, "window is block-granular, not wider"
    assert m.sum() < causal.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_sparse_matches_reference(dtype):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d = 4, 2, 32
    lens = [70, 33]
    plan = plan_block_sparse(max(lens), sink_tokens=8, window_tokens=16, block_m=16, block_n=16, device=DEV)
    head_kind = torch.tensor([0, 1, 1, 0], dtype=torch.int32)
    q = torch.randn(sum(lens), hq, d, generator=gen).to(dtype)
    k = torch.randn(sum(lens), hkv, d, generator=gen).to(dtype)
    v = torch.randn(sum(lens), hkv, d, generator=gen).to(dtype)
    cu = torch.tensor([0, 70, 103], dtype=torch.int32)
    out = block_sparse_prefill(q.to(DEV), k.to(DEV), v.to(DEV), cu.to(DEV), max(lens), head_kind.to(DEV), plan,
                               d ** -0.5, 4, 1).cpu().float()
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    for a, b in [(0, 70), (70, 103)]:
        ref = reference_block_sparse(q[a:b], k[a:b], v[a:b], head_kind, plan, d ** -0.5)
        torch.testing.assert_close(out[a:b], ref, atol=tol, rtol=tol)


@pytest.mark.skipif(DEV != "cuda", reason="production tiles at d=128 are too slow for the interpreter")
@pytest.mark.parametrize("bm,bn,warps,stages", [(128, 128, 8, 3), (128, 64, 8, 3)])
def test_gpu_production_tiles(bm, bn, warps, stages):
    """Production tiles (d=128, 128-row q blocks), GQA 8/2, varlen with ragged ends and an empty
    sequence, and q/k/v as strided (T, H, D) views of (H, T, D) tensors, as the benchmark passes them."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, lens = 8, 2, 128, [1100, 0, 333]
    T = sum(lens)
    plan = plan_block_sparse(max(lens), sink_tokens=64, window_tokens=256, block_m=bm, block_n=bn, device=DEV)
    head_kind = torch.tensor([0, 1] * 4, dtype=torch.int32)
    q = torch.randn(hq, T, d, generator=gen).to(torch.bfloat16)
    k = torch.randn(hkv, T, d, generator=gen).to(torch.bfloat16)
    v = torch.randn(hkv, T, d, generator=gen).to(torch.bfloat16)
    cu = torch.tensor([0, lens[0], lens[0], T], dtype=torch.int32)
    qd, kd, vd = (t.to(DEV).transpose(0, 1) for t in (q, k, v))  # (T, H, D) views
    out = block_sparse_prefill(qd, kd, vd, cu.to(DEV), max(lens), head_kind.to(DEV), plan, d ** -0.5, warps,
                               stages).cpu().float()
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    for a, b in [(0, lens[0]), (lens[0], T)]:
        ref = reference_block_sparse(q[a:b], k[a:b], v[a:b], head_kind, plan, d ** -0.5)
        torch.testing.assert_close(out[a:b], ref, atol=2e-2, rtol=2e-2)


def test_empty_and_short_sequences():
    """An empty sequence between two others, and sequences shorter than one q block: nothing of a
    neighbour is overwritten (the output starts as NaN and must be finite and right everywhere)."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, lens = 2, 1, 16 if DEV == "cpu" else 64, [5, 0, 19, 0]
    bm = bn = 16
    T = sum(lens)
    dtype = torch.float32 if DEV == "cpu" else torch.bfloat16
    plan = plan_block_sparse(max(lens), sink_tokens=4, window_tokens=8, block_m=bm, block_n=bn, device=DEV)
    head_kind = torch.tensor([0, 1], dtype=torch.int32)
    q, k, v = (torch.randn(T, h, d, generator=gen).to(dtype) for h in (hq, hkv, hkv))
    cu = torch.tensor([0, 5, 5, 24, 24], dtype=torch.int32)
    out = torch.full_like(q, float("nan")).to(DEV)
    block_sparse_prefill(q.to(DEV), k.to(DEV), v.to(DEV), cu.to(DEV), max(lens), head_kind.to(DEV), plan, d ** -0.5,
                         4, 1, out=out)
    for a, b in [(0, 5), (5, 24)]:
        ref = reference_block_sparse(q[a:b], k[a:b], v[a:b], head_kind, plan, d ** -0.5)
        torch.testing.assert_close(out[a:b].cpu().float(), ref, atol=2e-2, rtol=2e-2)


def test_plan_lists_end_with_the_diagonal():
    """Entries past n_full are the masked ones: every list must end with exactly the q block's
    block_m // block_n diagonal blocks, for any sink / window / tile shape."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    for _ in range(40):
        bn = int(torch.tensor([16, 32, 64]).gather(0, torch.randint(0, 3, (1,), generator=gen)))
        bm = bn * int(torch.randint(1, 5, (1,), generator=gen))
        L = int(torch.randint(1, 1500, (1,), generator=gen))
        sink, win = (int(x) for x in torch.randint(0, 400, (2,), generator=gen))
        plan = plan_block_sparse(L, sink, win, bm, bn)
        for kind in (0, 1):
            for qb in range(plan.n_full.shape[1]):
                nf, nt = int(plan.n_full[kind, qb]), int(plan.n_tot[kind, qb])
                tail = plan.block_idx[kind, qb, nf:nt].tolist()
                assert tail == list(range(qb * bm // bn, (qb + 1) * bm // bn)), (bm, bn, L, sink, win, kind, qb)
                assert all(j < qb * bm // bn for j in plan.block_idx[kind, qb, :nf].tolist())
