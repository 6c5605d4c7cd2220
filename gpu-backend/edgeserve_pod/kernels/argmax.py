"""Greedy sampling on the device: row argmax over the vocabulary, and the step advance that lets
several decode steps replay back to back from one CUDA graph with no host work in between.

Why: torch's argmax over one 128K-entry row runs as a single-CTA reduction (~28 us on an H100,
2% of a 1B decode step); two stages over 4K-entry chunks take a few microseconds.

argmax_rows(logits)         (n, V) float -> (n,) int64, the first index of the row maximum
                            (torch.argmax's tie rule).
argmax_advance(logits, ...) the same argmax, then, per row, in the decode graph's device buffers:
                            ids <- token; positions += 1; context lens += 1; slot <- the paged
                            slot of the new position from the row's block table; and the token
                            into ring[row, (old position - first position) % ring width].
The CPU path (and the reference for the tests) is torch.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install
    triton = None

CHUNK = 4096  # vocabulary entries per first-stage program


if triton is not None:

    @triton.jit
    def _chunk_argmax(L, PMax, PIdx, V, stride_l, n_chunks, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        offs = c * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(L + row * stride_l + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        m, i = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        tl.store(PMax + row * n_chunks + c, m)
        tl.store(PIdx + row * n_chunks + c, c * BLOCK + i)

    @triton.jit
    def _pick(PMax, PIdx, row, n_chunks, BLOCK_C: tl.constexpr):
        cs = tl.arange(0, BLOCK_C)
        pm = tl.load(PMax + row * n_chunks + cs, mask=cs < n_chunks, other=float("-inf"))
        _, j = tl.max(pm, axis=0, return_indices=True, return_indices_tie_break_left=True)
        return tl.load(PIdx + row * n_chunks + j).to(tl.int64)

    @triton.jit
    def _final_argmax(PMax, PIdx, Out, n_chunks, BLOCK_C: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        tl.store(Out + row, _pick(PMax, PIdx, row, n_chunks, BLOCK_C))

    @triton.jit
    def _final_advance(PMax, PIdx, Ids, Pos, Slot, Ctx, Pos0, BT, Ring, n_chunks, stride_bt, bt_w, ring_w,
                       block_size, scratch_slot, BLOCK_C: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        tok = _pick(PMax, PIdx, row, n_chunks, BLOCK_C)
        p = tl.load(Pos + row)
        tl.store(Ring + row * ring_w + (p - tl.load(Pos0 + row)) % ring_w, tok)
        tl.store(Ids + row, tok)
        tl.store(Pos + row, p + 1)
        tl.store(Ctx + row, tl.load(Ctx + row) + 1)
        # a new position past the row's table (the graph advances every row, also on a single step
        # or in a capture warm-up) gets the scratch slot: nothing of a sequence is overwritten
        col = (p + 1) // block_size
        blk = tl.load(BT + row * stride_bt + tl.minimum(col, bt_w - 1))
        tl.store(Slot + row, tl.where(col < bt_w, blk * block_size + (p + 1) % block_size, scratch_slot))


def _first_stage(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    n, V = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("logits must be contiguous along the vocabulary")
    n_chunks = triton.cdiv(V, CHUNK)
    pmax = torch.empty(n, n_chunks, dtype=torch.float32, device=logits.device)
    pidx = torch.empty(n, n_chunks, dtype=torch.int64, device=logits.device)
    _chunk_argmax[(n, n_chunks)](logits, pmax, pidx, V, logits.stride(0), n_chunks, BLOCK=CHUNK)
    return pmax, pidx, n_chunks


def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """(n, V) -> (n,) int64: the first index of each row's maximum."""
    if not logits.is_cuda or triton is None or logits.shape[0] == 0:
        return logits.argmax(dim=-1)
    pmax, pidx, n_chunks = _first_stage(logits)
    out = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
    _final_argmax[(logits.shape[0],)](pmax, pidx, out, n_chunks, BLOCK_C=triton.next_power_of_2(n_chunks))
    return out


def argmax_advance(logits: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                   ctx_lens: torch.Tensor, pos0: torch.Tensor, block_table: torch.Tensor, ring: torch.Tensor,
                   block_size: int, scratch_slot: int, use_triton: bool | None = None) -> None:
    """Greedy step advance for rows 0..n-1 of a decode batch (all int64 device buffers):
    logits (n, V); ids, positions, slots, ctx_lens, pos0 (>= n,); block_table (>= n, W) (a new
    position past the table gets `scratch_slot`); ring (>= n, R). Updates the buffers in place."""
    n = logits.shape[0]
    if n == 0:
        return
    if use_triton is None:
        use_triton = logits.is_cuda and triton is not None
    if not use_triton:
        tok = logits.argmax(dim=-1)
        r = torch.arange(n, device=logits.device)
        ring[r, (positions[:n] - pos0[:n]) % ring.shape[1]] = tok
        ids[:n] = tok
        positions[:n] += 1
        ctx_lens[:n] += 1
        p = positions[:n]
        col = p // block_size
        W = block_table.shape[1]
        slot = block_table[:n].gather(1, col.clamp(max=W - 1)[:, None])[:, 0] * block_size + p % block_size
        slots[:n] = torch.where(col < W, slot, torch.full_like(slot, scratch_slot))
        return
    for t in (ids, positions, slots, ctx_lens, pos0, block_table, ring):
        if t.dtype != torch.int64:
            raise ValueError(f"argmax_advance buffers must be int64, got {t.dtype}")
    if block_table.stride(1) != 1 or ring.stride(1) != 1:
        raise ValueError("block_table and ring must be contiguous along their last dimension")
    pmax, pidx, n_chunks = _first_stage(logits)
    _final_advance[(n,)](pmax, pidx, ids, positions, slots, ctx_lens, pos0, block_table, ring, n_chunks,
                         block_table.stride(0), block_table.shape[1], ring.stride(0), block_size, scratch_slot,
                         BLOCK_C=triton.next_power_of_2(n_chunks))
