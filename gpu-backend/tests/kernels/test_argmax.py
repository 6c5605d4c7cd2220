"""Greedy argmax and the in-graph step advance (kernels/argmax.py) against torch, through the
Triton interpreter on CPU (natively on a GPU)."""

import pytest
import torch

from edgeserve_pod.kernels import argmax as am

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SCRATCH = 12345


@pytest.mark.parametrize("n,V", [(1, 128256), (3, 4096), (2, 5000), (4, 49152)])
def test_argmax_rows_matches_torch_first_max(n, V):
    g = torch.Generator().manual_seed(n * 7 + V)
    x = torch.randn(n, V, generator=g)
    # ties: plant the row maximum twice, in different chunks, and once inside one chunk
    top = x.max() + 1.0
    x[0, V - 1] = top
    x[0, V // 3] = top
    if n > 1:
        x[1, 5] = x[1, 9] = top
    x = x.to(DEV)
    got = am.argmax_rows(x) if DEV == "cuda" else _interp_argmax(x)
    assert torch.equal(got.cpu(), x.argmax(dim=-1).cpu())


def _interp_argmax(x):
    pmax, pidx, n_chunks = am._first_stage(x)
    out = torch.empty(x.shape[0], dtype=torch.int64)
    am._final_argmax[(x.shape[0],)](pmax, pidx, out, n_chunks, BLOCK_C=am.triton.next_power_of_2(n_chunks))
    return out


def _buffers(n, W, B, g):
    bt = torch.randint(0, 100, (n + 2, W), generator=g)
    pos = torch.randint(0, W * B - 4, (n + 2,), generator=g)
    return dict(ids=torch.zeros(n + 2, dtype=torch.int64), positions=pos.clone(),
                slots=torch.full((n + 2,), -1, dtype=torch.int64), ctx_lens=pos + 1, pos0=pos - 1,
                block_table=bt, ring=torch.full((n + 2, 4), -1, dtype=torch.int64))


@pytest.mark.parametrize("n", [1, 3])
def test_argmax_advance_matches_torch_path(n):
    g = torch.Generator().manual_seed(n)
    B, W, V = 16, 6, 9000
    logits = torch.randn(n, V, generator=g)
    ref = _buffers(n, W, B, torch.Generator().manual_seed(11))
    got = {k: v.clone().to(DEV) for k, v in ref.items()}
    am.argmax_advance(logits, block_size=B, scratch_slot=SCRATCH, use_triton=False, **ref)
    am.argmax_advance(logits.to(DEV), block_size=B, scratch_slot=SCRATCH, use_triton=True, **got)
    for k in ref:
        assert torch.equal(got[k].cpu(), ref[k]), k
    tok = logits.argmax(-1)
    assert torch.equal(ref["ids"][:n], tok)
    # rows past n are untouched; the ring got the token at column (old pos - pos0) % 4 = 1
    assert torch.equal(ref["ring"][:n, 1], tok) and (ref["ring"][n:] == -1).all()
    p = ref["positions"][:n]
    inside = p // B < W
    want = torch.where(inside, ref["block_table"][torch.arange(n), (p // B).clamp(max=W - 1)] * B + p % B, SCRATCH)
    assert torch.equal(ref["slots"][:n], want)


def test_advance_past_the_table_takes_the_scratch_slot():
    B, W = 16, 2
    bufs = dict(ids=torch.zeros(2, dtype=torch.int64), positions=torch.tensor([W * B - 1, 3]),
                slots=torch.zeros(2, dtype=torch.int64), ctx_lens=torch.tensor([W * B, 4]), pos0=torch.tensor([W * B - 1, 3]),
                block_table=torch.tensor([[7, 9], [4, 5]]), ring=torch.zeros(2, 4, dtype=torch.int64))
    got = {k: v.clone().to(DEV) for k, v in bufs.items()}
    logits = torch.randn(2, 300)
    am.argmax_advance(logits.to(DEV), block_size=B, scratch_slot=SCRATCH, use_triton=True, **got)
    # row 0 moves to position 32 = past its two blocks: scratch, never block 9's first slot
    assert got["slots"].cpu().tolist() == [SCRATCH, 4 * B + 4]
    assert got["positions"].cpu().tolist() == [W * B, 4]
