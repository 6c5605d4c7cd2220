"""Quest: min/max maintenance at KV write, page scores vs the float32 bound, top-k selection."""
import torch

from edgeserve_pod.kernels.quest import quest_scores, reference_scores, select_pages, update_page_minmax

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def key16(x):
    """The selection kernel's order-preserving key, top 16 bits (bf16 precision): it ranks pages
    by this, lowest page first among equal keys."""
    bits = x.contiguous().view(torch.int32).long()
    t = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return ((t & 0xFFFFFFFF) ^ 0x80000000) >> 16


def test_minmax_over_several_writes():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, hkv, d, nb = 8, 2, 16, 6
    kmin = torch.full((nb, hkv, d), 123.0, device=DEV)  # stale garbage from a previous owner
    kmax = torch.full((nb, hkv, d), -123.0, device=DEV)
    table = torch.tensor([4, 1, 3])
    keys = torch.randn(20, hkv, d, generator=gen)
    slots = table[torch.arange(20) // bs] * bs + torch.arange(20) % bs
    for lo, hi in [(0, 5), (5, 13), (13, 14), (14, 20)]:  # prefill chunks then decode steps
        update_page_minmax(keys[lo:hi].to(DEV), slots[lo:hi].to(DEV), kmin, kmax, bs)
    for p, blk in enumerate(table.tolist()):
        chunk = keys[p * bs:(p + 1) * bs]
        torch.testing.assert_close(kmin[blk].cpu(), chunk.amin(0))
        torch.testing.assert_close(kmax[blk].cpu(), chunk.amax(0))


def test_scores_match_reference_and_selection_keeps_ends():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, hq, hkv, d, nb = 4, 8, 2, 32, 40
    ctx = [37, 9, 4]
    width = 10
    perm = torch.randperm(nb, generator=gen)
    table = perm[:3 * width].view(3, width).to(torch.int32)
    kmin = torch.randn(nb, hkv, d, generator=gen)
    kmax = kmin + torch.rand(nb, hkv, d, generator=gen)
    q = torch.randn(3, hq, d, generator=gen)
    ctx_t = torch.tensor(ctx, dtype=torch.int32)
    s = quest_scores(q.to(DEV), kmin.to(DEV), kmax.to(DEV), table.to(DEV), ctx_t.to(DEV), bs, block_p=16).cpu()
    for i, c in enumerate(ctx):
        n = -(-c // bs)
        ref = reference_scores(q[i], kmin, kmax, table[i], c, bs)
        torch.testing.assert_close(s[i, :, :n], ref, atol=1e-3, rtol=1e-4)
        assert torch.isneginf(s[i, :, n:]).all()
    idx, num_sel = select_pages(s.to(DEV), ctx_t.to(DEV), budget_tokens=16, block_size=bs)
    idx, num_sel = idx.cpu(), num_sel.cpu()
    assert idx.shape == (3, hkv, 4) and num_sel.tolist() == [[4, 4], [3, 3], [1, 1]]
    for h in range(hkv):
        n = 10
        chosen = set(idx[0, h].tolist())
        assert {0, n - 1} <= chosen
        mid_chosen = sorted(chosen - {0, n - 1})
        rest = [p for p in range(1, n - 1) if p not in chosen]
        assert len(mid_chosen) == 2  # the two best middle pages, at the kernel's bf16 precision
        assert key16(s[0, h, mid_chosen]).min() >= key16(s[0, h, rest]).max()
        assert set(idx[1, h, :3].tolist()) == {0, 1, 2}


def test_triton_topk_matches_torch_topk():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    B, H, P, bs = 3, 2, 50, 4
    scores = torch.randn(B, H, P, generator=gen)
    ctx = torch.tensor([200, 30, 2], dtype=torch.int32)  # 50, 8 and 1 valid pages
    n_pages = [50, 8, 1]
    for b in range(B):
        scores[b, :, n_pages[b] - 1] = float("inf")
        scores[b, :, 0] = float("inf")
        scores[b, :, n_pages[b]:] = float("-inf")
    idx, num_sel = select_pages(scores.to(DEV), ctx.to(DEV), budget_tokens=40, block_size=bs, method="triton")
    ref_idx, ref_num = select_pages(scores, ctx, budget_tokens=40, block_size=bs, method="torch")
    assert torch.equal(num_sel.cpu(), ref_num)
    for b in range(B):
        for h in range(H):
            n = int(num_sel[b, h])
            got = idx[b, h, :n].cpu().tolist()
            assert got == sorted(got) and len(set(got)) == n
            assert {0, n_pages[b] - 1} <= set(got) and max(got) < n_pages[b]
            rest = [p for p in range(n_pages[b]) if p not in got]
            if rest:  # every chosen page scores >= every other one, at bf16 precision
                assert key16(scores[b, h, got]).min() >= key16(scores[b, h, rest]).max()


def test_torch_path_scores_and_per_sequence_budgets():
    """The CPU engine's Quest (torch_quest_scores + torch top-k) against the float32 bound."""
    from edgeserve_pod.kernels.quest import torch_quest_scores

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, hq, hkv, d, nb = 4, 6, 2, 16, 30
    ctx = torch.tensor([37, 9, 4], dtype=torch.int32)
    table = torch.randperm(nb, generator=gen)[:30].view(3, 10).to(torch.int32)
    kmin = torch.randn(nb, hkv, d, generator=gen)
    kmax = kmin + torch.rand(nb, hkv, d, generator=gen)
    q = torch.randn(3, hq, d, generator=gen)
    s = torch_quest_scores(q, kmin, kmax, table, ctx, bs)
    for i, c in enumerate(ctx.tolist()):
        n = -(-c // bs)
        torch.testing.assert_close(s[i, :, :n], reference_scores(q[i], kmin, kmax, table[i], c, bs), atol=1e-4, rtol=1e-5)
        assert torch.isneginf(s[i, :, n:]).all()
    idx, num = select_pages(s, ctx, budget_tokens=24, block_size=bs, method="torch",
                            budget_per_seq=torch.tensor([12, 24, 24], dtype=torch.int32))
    assert num[:, 0].tolist() == [3, 3, 1]  # 3 of 10 pages; 3 of 3; 1 of 1
    for h in range(hkv):
        assert set(idx[0, h, :3].tolist()) == {0, 9, int(s[0, h, 1:9].argmax()) + 1}


def test_triton_selection_skips_kept_rows():
    """Rows flagged in `skip` are neither scored nor selected: their previous lists stay."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    bs, hq, hkv, d, nb = 4, 4, 2, 16, 24
    ctx = torch.tensor([40, 40], dtype=torch.int32)
    table = torch.randperm(nb, generator=gen)[:20].view(2, 10).to(torch.int32)
    kmin = torch.randn(nb, hkv, d, generator=gen)
    kmax = kmin + torch.rand(nb, hkv, d, generator=gen)
    q = torch.randn(2, hq, d, generator=gen)
    skip = torch.tensor([True, False])
    s_dev = torch.full((2, hkv, 10), 7.0, device=DEV)
    quest_scores(q.to(DEV), kmin.to(DEV), kmax.to(DEV), table.to(DEV), ctx.to(DEV), bs, out=s_dev, skip=skip.to(DEV))
    assert (s_dev[0] == 7.0).all()  # skipped row untouched
    torch.testing.assert_close(s_dev[1, :, :].cpu(), reference_scores(q[1], kmin, kmax, table[1], 40, bs), atol=1e-3, rtol=1e-4)
    idx = torch.full((2, hkv, 4), -5, dtype=torch.int32, device=DEV)
    num = torch.full((2, hkv), -5, dtype=torch.int32, device=DEV)
    select_pages(s_dev, ctx.to(DEV), 16, bs, skip=skip.to(DEV), out=(idx, num))
    assert (idx[0] == -5).all() and (num[0] == -5).all()
    assert (num[1] == 4).all() and {0, 9} <= set(idx[1, 0].tolist())
