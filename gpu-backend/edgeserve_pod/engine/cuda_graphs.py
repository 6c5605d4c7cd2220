"""Decode steps replayed from CUDA graphs, one graph per (batch bucket, block-table-width bucket).

A decode-only step is padded up to the nearest batch bucket (padded rows write to the scratch
block and are discarded) and its block table up to the nearest width bucket. All inputs travel
in one pinned int64 buffer and one host->device copy; the graph itself converts the block table
and lengths to int32, runs the model and the lm_head, and writes the logits into one output
buffer shared by all graphs. Graphs share one memory pool.

Width buckets: the decode kernels size their launch (split-K count, per-split token range) from
the block-table width, so a graph captured at max_model_len does attention work sized for the
full length even at a 32-token context. The torch backend gets fine buckets (powers of two,
captured on first use); the Triton backend gets a few coarse ones (x4 apart) captured at start-up.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from edgeserve_pod.engine.step_inputs import StepInputs
from edgeserve_pod.layers.attention_base import AttentionMetadata


def _buckets(limit: int, small: list[int], step: int) -> list[int]:
    out = [b for b in small if b < limit]
    b = small[-1] + step if small else step
    while b < limit:
        out.append(b)
        b += step
    return sorted(set(out + [limit]))


def make_width_buckets(max_blocks: int, first: int, factor: int) -> list[int]:
    """Block-table widths first, first*factor, ... below max_blocks, then max_blocks."""
    if max_blocks < 1 or first < 1 or factor < 2:
        raise ValueError(f"make_width_buckets needs max_blocks, first >= 1 and factor >= 2, got {max_blocks}, {first}, {factor}")
    out, w = [], first
    while w < max_blocks:
        out.append(w)
        w *= factor
    return out + [max_blocks]


def pick(buckets: list[int], n: int) -> int:
    """The smallest bucket >= n (buckets sorted ascending; n <= buckets[-1])."""
    i = bisect.bisect_left(buckets, n)
    if i == len(buckets):
        raise ValueError(f"{n} exceeds the largest bucket {buckets[-1]}")
    return buckets[i]


class DecodeGraphs:
    def __init__(self, model, kv_caches, states, max_bs: int, max_blocks: int, scratch_block: int, block_size: int,
                 device: torch.device, width_buckets: bool):
        self.model, self.kv_caches, self.states = model, kv_caches, states
        self.device = device
        self.max_bs, self.max_blocks = max_bs, max_blocks
        self.bs_buckets = _buckets(max_bs, [1, 2, 4, 8], 8)
        # torch gathers every listed block, so its cost follows the width closely: fine buckets.
        # Triton's split-K launch is sized from the width: a few coarse buckets, all captured
        # at start-up (8 blocks = 128 tokens at block size 16, then x4).
        self.w_buckets = make_width_buckets(max_blocks, 4, 2) if width_buckets else make_width_buckets(max_blocks, 8, 4)
        self.scratch_block = scratch_block
        self.scratch_slot = scratch_block * block_size
        # host staging: [ids | positions | slots | ctx_lens | block_table (max_bs * max_blocks)]
        n = max_bs * (4 + max_blocks)
        self.host = torch.zeros(n, dtype=torch.int64, pin_memory=True)
        self.host_np = self.host.numpy()
        self.dev = torch.zeros(n, dtype=torch.int64, device=device)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: torch.Tensor | None = None  # (max_bs, V) float32, written by every graph
        self.pool = None

    def supports(self, inp: StepInputs) -> bool:
        return (inp.num_prefill_tokens == 0 and 0 < inp.num_decode_tokens <= self.max_bs
                and inp.decode_block_tables.shape[1] <= self.max_blocks)

    def run(self, inp: StepInputs) -> torch.Tensor:
        """Logits (n, V) float32 of a decode-only step."""
        n = inp.num_decode_tokens
        bs = pick(self.bs_buckets, n)
        w = pick(self.w_buckets, inp.decode_block_tables.shape[1])
        M, h = self.max_bs, self.host_np
        h[0:n] = inp.input_ids.numpy()
        h[n:bs] = 0
        h[M:M + n] = inp.positions.numpy()
        h[M + n:M + bs] = 0
        h[2 * M:2 * M + n] = inp.slot_mapping.numpy()
        h[2 * M + n:2 * M + bs] = self.scratch_slot
        h[3 * M:3 * M + n] = inp.decode_context_lens.numpy()
        h[3 * M + n:3 * M + bs] = 1
        bt = h[4 * M:].reshape(M, self.max_blocks)
        bt[:bs, :w] = self.scratch_block
        tw = inp.decode_block_tables.shape[1]
        bt[:n, :tw] = inp.decode_block_tables.numpy()
        used = 4 * M + bs * self.max_blocks  # rows past bs of the block table are never read
        self.dev[:used].copy_(self.host[:used], non_blocking=True)
        key = (bs, w)
        if key not in self.graphs:
            self.graphs[key] = self._capture(bs, w)
        self.graphs[key].replay()
        return self.logits[:n]

    def capture_all(self) -> None:
        """Capture every (batch bucket, width bucket) now (largest first, so that smaller graphs
        reuse the pool), so that no capture happens while serving."""
        M, h = self.max_bs, self.host_np
        h[:] = 0
        h[2 * M:3 * M] = self.scratch_slot
        h[3 * M:4 * M] = 1
        h[4 * M:] = self.scratch_block
        self.dev.copy_(self.host)
        for w in reversed(self.w_buckets):
            for bs in reversed(self.bs_buckets):
                if (bs, w) not in self.graphs:
                    self.graphs[(bs, w)] = self._capture(bs, w)
        torch.cuda.synchronize(self.device)

    def _body(self, bs: int, w: int) -> None:
        M, d = self.max_bs, self.dev
        bt = d[4 * M:].view(M, self.max_blocks)[:bs, :w].to(torch.int32)  # (bs, w) int32, contiguous
        meta = AttentionMetadata(
            num_prefill_tokens=0, num_decode_tokens=bs, slot_mapping=d[2 * M:2 * M + bs],
            decode_block_tables=bt, decode_context_lens=d[3 * M:3 * M + bs].to(torch.int32),
            overrides=[None] * bs)
        hidden = self.model(d[0:bs], d[M:M + bs], self.kv_caches, self.states, meta)
        logits = self.model.compute_logits(hidden)  # (bs, V) float32
        if self.logits is None:
            self.logits = torch.empty(M, logits.shape[1], dtype=logits.dtype, device=self.device)
        self.logits[:bs].copy_(logits)

    def _capture(self, bs: int, w: int):
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(2):
                self._body(bs, w)
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self._body(bs, w)
        if self.pool is None:
            self.pool = g.pool()
        return g
