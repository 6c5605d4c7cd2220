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
                               d ** -0.5, num_warps=4, num_stages=1).cpu().float()
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    for a, b in [(0, 70), (70, 103)]:
        ref = reference_block_sparse(q[a:b], k[a:b], v[a:b], head_kind, plan, d ** -0.5)
        torch.testing.assert_close(out[a:b], ref, atol=tol, rtol=tol)
