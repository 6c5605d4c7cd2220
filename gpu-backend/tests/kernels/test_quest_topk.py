"""select_pages' Triton top-k (two-histogram radix select) against torch.topk and against the
definition, on fresh random scores: distinct 16-bit keys (where torch.topk's set is unique, so
it is compared every run), heavy ties, +inf ends, -inf past the context, short contexts,
per-sequence budgets."""
import pytest
import torch

from edgeserve_pod.kernels.quest import select_pages

DEV = "cuda" if torch.cuda.is_available() else "cpu"


# every bf16 value of magnitude in [2^-8, 4), both signs: 2560 floats with distinct 16-bit keys
_BF16 = torch.arange(0x3B80, 0x4080, dtype=torch.int32)
_DISTINCT = torch.cat([_BF16, _BF16 | 0x8000]).to(torch.int16).view(torch.bfloat16).float()


def _scores(B, H, P, ctx, bs, gen, ties):
    if ties:  # few distinct values: the threshold falls inside a run of equal keys
        s = (torch.randn(B, H, P, generator=gen) * 2).round() / 2
    else:  # each row a random draw of distinct bf16 values, so that no two keys are equal
        assert P <= _DISTINCT.numel()
        s = torch.stack([_DISTINCT[torch.randperm(_DISTINCT.numel(), generator=gen)[:P]] for _ in range(B * H)])
        s = s.view(B, H, P)
    for b, c in enumerate(ctx):
        n = -(-c // bs)
        s[b, :, 0] = s[b, :, n - 1] = float("inf")
        s[b, :, n:] = float("-inf")
    return s.to(DEV).contiguous()


def _key(x: torch.Tensor) -> torch.Tensor:
    """The kernel's 16-bit key: top half of an order-preserving encoding of the float32 score."""
    b = x.contiguous().view(torch.int32).long()
    enc = (b ^ ((b >> 31) & 0x7FFFFFFF)) & 0xFFFFFFFF
    return (enc ^ 0x80000000) >> 16


def _as_sets(idx, num):
    return [[sorted(idx[b, h, :num[b, h]].tolist()) for h in range(idx.shape[1])] for b in range(idx.shape[0])]


@pytest.mark.parametrize("P, budget, ties", [(40, 64, False), (300, 256, True), (1000, 1024, False), (1000, 512, True)])
def test_top_pages_by_definition_and_as_torch_topk(P, budget, ties):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs = 16
    ctx = [P * bs, P * bs - 7, 3 * bs + 1, 20]
    s = _scores(len(ctx), 2, P, ctx, bs, gen, ties)
    c = torch.tensor(ctx, dtype=torch.int32, device=DEV)
    got_i, got_n = select_pages(s, c, budget, bs, method="triton")
    if not ties:  # keys distinct (16 bits): the same set as torch.topk on the keys
        sk = _key(s.cpu()).float()
        for b, cc in enumerate(ctx):  # distinct but for the two +inf ends
            n = -(-cc // bs)
            assert all(sk[b, h, :n].unique().numel() == max(1, n - 1) for h in range(2))
        want_i, want_n = select_pages(sk.to(DEV).contiguous(), c, budget, bs, method="torch")
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
            sv = _key(s[b, h, :n].cpu())  # the select works at 16-bit key precision
            if (~kept).any():
                assert sv[kept].min() >= sv[~kept].max()


def test_per_sequence_budgets():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, P = 16, 100
    ctx = [P * bs, P * bs, 50 * bs]
    s = _scores(3, 2, P, ctx, bs, gen, False)
    c = torch.tensor(ctx, dtype=torch.int32, device=DEV)
    per = torch.tensor([1024, 256, 2048], dtype=torch.int32, device=DEV)
    got_i, got_n = select_pages(s, c, 2048, bs, method="triton", budget_per_seq=per)
    assert got_n[:, 0].tolist() == [64, 16, 50]
    for b, k in enumerate([64, 16, 50]):  # the top k by key (ties at 16 bits would make this ambiguous)
        for h in range(2):
            key = _key(s[b, h].cpu())
            kept = got_i[b, h, :k].long().cpu()
            dropped = torch.ones(P, dtype=torch.bool)
            dropped[kept] = False
            dropped[-(-ctx[b] // bs):] = False
            assert not dropped.any() or key[kept].min() >= key[dropped].max()
