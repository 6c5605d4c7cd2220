"""quest_topk.topk_pages (two-histogram radix select) against the bit-by-bit kernel it replaces
and against a float32 definition, on fresh random scores: heavy ties, +inf ends, -inf past the
context, short contexts, per-sequence budgets."""
import pytest
import torch

from edgeserve_pod.kernels.quest import select_pages
from edgeserve_pod.kernels.quest_topk import topk_pages

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _scores(B, H, P, ctx, bs, gen, ties):
    s = torch.randn(B, H, P, generator=gen)
    if ties:  # few distinct values: the threshold falls inside a run of equal keys
        s = (s * 2).round() / 2
    for b, c in enumerate(ctx):
        n = -(-c // bs)
        s[b, :, 0] = s[b, :, n - 1] = float("inf")
        s[b, :, n:] = float("-inf")
    return s.to(DEV).contiguous()


def _as_sets(idx, num):
    return [[sorted(idx[b, h, :num[b, h]].tolist()) for h in range(idx.shape[1])] for b in range(idx.shape[0])]


@pytest.mark.parametrize("P, budget, ties", [(40, 64, False), (300, 256, True), (1000, 1024, False), (1000, 512, True)])
def test_same_pages_as_the_bit_by_bit_kernel(P, budget, ties):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs = 16
    ctx = [P * bs, P * bs - 7, 3 * bs + 1, 20]
    s = _scores(len(ctx), 2, P, ctx, bs, gen, ties)
    c = torch.tensor(ctx, dtype=torch.int32, device=DEV)
    want_i, want_n = select_pages(s, c, budget, bs, method="triton")
    got_i, got_n = topk_pages(s, c, budget, bs)
    assert torch.equal(got_n.cpu(), want_n.cpu())
    assert _as_sets(got_i.cpu(), got_n.cpu()) == _as_sets(want_i.cpu(), want_n.cpu())
    # and the definition: every kept page scores >= every dropped page of the context
    for b, cc in enumerate(ctx):
        n = -(-cc // bs)
        for h in range(2):
            keep = got_i[b, h, :got_n[b, h]].long().cpu()
            assert torch.equal(keep, keep.sort().values)  # ascending page order
            assert got_n[b, h] == min(n, max(2, budget // bs))
            kept = torch.zeros(n, dtype=torch.bool)
            kept[keep] = True
            sv = s[b, h, :n].cpu().to(torch.bfloat16).float()  # the select works at 16-bit key precision
            if (~kept).any():
                assert sv[kept].min() >= sv[~kept].max()


def test_per_sequence_budgets():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, P = 16, 200
    ctx = [P * bs, P * bs, 50 * bs]
    s = _scores(3, 2, P, ctx, bs, gen, False)
    c = torch.tensor(ctx, dtype=torch.int32, device=DEV)
    per = torch.tensor([1024, 256, 2048], dtype=torch.int32, device=DEV)
    want_i, want_n = select_pages(s, c, 2048, bs, method="triton", budget_per_seq=per)
    got_i, got_n = topk_pages(s, c, 2048, bs, budget_per_seq=per)
    assert torch.equal(got_n.cpu(), want_n.cpu()) and got_n[:, 0].tolist() == [64, 16, 50]
    assert _as_sets(got_i.cpu(), got_n.cpu()) == _as_sets(want_i.cpu(), want_n.cpu())
