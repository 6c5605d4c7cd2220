"""Steps replayed from CUDA graphs.

DecodeGraphs: decode-only steps, one graph per (batch bucket, block-table-width bucket).
PrefillGraphs: short prefill-only steps (a new request on an idle pod, the suffix after a
cached prefix), one graph per token bucket. Eager prefill of a few dozen tokens is bound by
kernel launches (~0.5 ms of host time per layer), so without this a request whose 2K prefix is
cached waited nearly as long as one that computed it.

A decode-only step is padded up to the nearest batch bucket (padded rows write to the scratch
block and are discarded) and its block table up to the nearest width bucket. All inputs travel
in one pinned int64 buffer and one host->device copy; the graph itself converts the block table
and lengths to int32, runs the model and the lm_head, and writes the logits into one output
buffer shared by all graphs. Graphs share one memory pool.

Each decode graph ends with the greedy step advance (kernels/argmax.py): the argmax token goes
into the input ids and a token ring, positions / context lengths / slots move one token on. A
greedy decode-only batch can therefore replay the same graph k times with no host work in between
and read k tokens per row from the ring with one sync (`run_greedy`). A single step ignores the
advance: the next step re-stages every input.

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
from edgeserve_pod.kernels.argmax import argmax_advance
from edgeserve_pod.layers.attention_base import AttentionMetadata

RING = 64  # tokens per row the greedy ring holds: the most steps one run_greedy takes


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


class GraphPool:
    """One CUDA-graph memory pool shared by every graph of a runner (graphs replay one at a time)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = None

    def capture(self, body) -> "torch.cuda.CUDAGraph":
        """Warm `body` up twice on a side stream (allocator, Triton autotune), then capture it."""
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(2):
                body()
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            body()
        if self.pool is None:
            self.pool = g.pool()
        return g


class DecodeGraphs:
    def __init__(self, model, kv_caches, states, max_bs: int, max_blocks: int, scratch_block: int, block_size: int,
                 device: torch.device, width_buckets: bool, pool: GraphPool | None = None, overrides_ok: bool = True,
                 scratch_ring_slot: int | None = None):
        self.model, self.kv_caches, self.states = model, kv_caches, states
        self.overrides_ok = overrides_ok  # False: steps with per-request attention overrides run eager
        self.device = device
        self.max_bs, self.max_blocks = max_bs, max_blocks
        self.bs_buckets = _buckets(max_bs, [1, 2, 4, 8], 8)
        # torch gathers every listed block, so its cost follows the width closely: fine buckets.
        # Triton's split-K launch is sized from the width: a few coarse buckets, all captured
        # at start-up (8 blocks = 128 tokens at block size 16, then x4).
        self.w_buckets = make_width_buckets(max_blocks, 4, 2) if width_buckets else make_width_buckets(max_blocks, 8, 4)
        self.scratch_block = scratch_block
        self.scratch_slot = scratch_block * block_size
        self.block_size = block_size
        # streaming_kv="ring": each row's ring slot is a static input too (padded rows: the scratch
        # slot); None: no rings, meta.seq_slots stays None
        self.scratch_ring_slot = scratch_ring_slot
        # host staging: [ids | positions | slots | ctx_lens | first positions | ring slots | block_table (max_bs * max_blocks)]
        n = max_bs * (6 + max_blocks)
        self.host = torch.zeros(n, dtype=torch.int64, pin_memory=device.type == "cuda")
        self.host_np = self.host.numpy()
        self.dev = torch.zeros(n, dtype=torch.int64, device=device)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: torch.Tensor | None = None  # (max_bs, V) float32, written by every graph
        self.ring = torch.zeros(max_bs, RING, dtype=torch.int64, device=device)  # greedy tokens per row
        self.pool = pool or GraphPool(device)

    def supports(self, inp: StepInputs) -> bool:
        return (inp.num_prefill_tokens == 0 and 0 < inp.num_decode_tokens <= self.max_bs
                and inp.decode_block_tables.shape[1] <= self.max_blocks
                and (self.overrides_ok or not any(inp.overrides)))

    def run(self, inp: StepInputs, ids: torch.Tensor | None = None, host: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, V) float32 of a decode-only step.

        ids: (n,) int64 on the device, the step's input tokens when they were sampled on the
        device by the previous step (multi-step decode), instead of inp.input_ids. host: a
        pinned staging buffer of this object's size to use instead of its own, so that several
        steps can be queued before the first one's host->device copy has run."""
        key = self.stage(inp, ids, host)
        self.graphs[key].replay()
        return self.logits[:inp.num_decode_tokens]

    def greedy_tokens(self, n: int) -> torch.Tensor:
        """(n,) int64: the argmax tokens of the last replay (its in-graph greedy advance wrote
        them as the next step's input ids), so a greedy single step needs no second argmax."""
        return self.dev[0:n]

    def run_greedy(self, inp: StepInputs, k: int) -> list[list[int]]:
        """k greedy decode steps replayed back to back from one graph: (k, n) tokens. The caller
        has grown every sequence's blocks to hold len(seq) + k - 1 tokens."""
        if not 1 <= k <= RING:
            raise ValueError(f"run_greedy takes 1..{RING} steps, got {k}")
        graph = self.graphs[self.stage(inp)]
        for _ in range(k):
            graph.replay()
        return self.ring[:inp.num_decode_tokens, :k].t().tolist()

    def stage(self, inp: StepInputs, ids: torch.Tensor | None = None, host: torch.Tensor | None = None) -> tuple[int, int]:
        """Pack a supported step into the device buffer (capturing its graph if it is new);
        returns the graph key."""
        n = inp.num_decode_tokens
        bs = pick(self.bs_buckets, n)
        w = pick(self.w_buckets, inp.decode_block_tables.shape[1])
        M = self.max_bs
        h = self.host_np if host is None else host.numpy()
        src = self.host if host is None else host
        h[0:n] = inp.input_ids.numpy()
        h[n:bs] = 0
        h[M:M + n] = inp.positions.numpy()
        h[M + n:M + bs] = 0
        h[2 * M:2 * M + n] = inp.slot_mapping.numpy()
        h[2 * M + n:2 * M + bs] = self.scratch_slot
        h[3 * M:3 * M + n] = inp.decode_context_lens.numpy()
        h[3 * M + n:3 * M + bs] = 1
        h[4 * M:5 * M] = h[M:2 * M]  # first positions: ring column = position - first position
        if self.scratch_ring_slot is not None:
            h[5 * M:5 * M + n] = inp.seq_slots.numpy()
            h[5 * M + n:5 * M + bs] = self.scratch_ring_slot
        bt = h[6 * M:].reshape(M, self.max_blocks)
        bt[:bs, :w] = self.scratch_block
        tw = inp.decode_block_tables.shape[1]
        bt[:n, :tw] = inp.decode_block_tables.numpy()
        used = 6 * M + bs * self.max_blocks  # rows past bs of the block table are never read
        key = (bs, w)
        for again in (False, True):
            self.dev[:used].copy_(src[:used], non_blocking=True)
            if ids is not None:
                self.dev[0:n].copy_(ids)
            if again or key in self.graphs:
                return key
            # captured on first use: the capture's warm-up runs this step eagerly twice, and each
            # run ends with the greedy advance, so the inputs are staged again afterwards (the
            # second warm-up writes KV one position on, into the row's own next slot or scratch)
            self.graphs[key] = self._capture(bs, w)
        return key

    def new_host_buffer(self) -> torch.Tensor:
        return torch.zeros_like(self.host, pin_memory=self.device.type == "cuda")

    def capture_all(self) -> None:
        """Capture every (batch bucket, width bucket) now (largest first, so that smaller graphs
        reuse the pool), so that no capture happens while serving."""
        M, h = self.max_bs, self.host_np
        h[:] = 0
        h[2 * M:3 * M] = self.scratch_slot
        h[3 * M:4 * M] = 1
        h[5 * M:6 * M] = self.scratch_ring_slot or 0
        h[6 * M:] = self.scratch_block
        self.dev.copy_(self.host)
        for w in reversed(self.w_buckets):
            for bs in reversed(self.bs_buckets):
                if (bs, w) not in self.graphs:
                    self.graphs[(bs, w)] = self._capture(bs, w)
        torch.cuda.synchronize(self.device)

    def _body(self, bs: int, w: int) -> None:
        M, d = self.max_bs, self.dev
        bt64 = d[6 * M:].view(M, self.max_blocks)
        bt = bt64[:bs, :w].to(torch.int32)  # (bs, w) int32, contiguous
        meta = AttentionMetadata(
            num_prefill_tokens=0, num_decode_tokens=bs, slot_mapping=d[2 * M:2 * M + bs],
            decode_block_tables=bt, decode_context_lens=d[3 * M:3 * M + bs].to(torch.int32),
            overrides=[None] * bs,
            seq_slots=None if self.scratch_ring_slot is None else d[5 * M:5 * M + bs].to(torch.int32))
        logits = self.model.logits(d[0:bs], d[M:M + bs], self.kv_caches, self.states, meta)  # (bs, V) float32
        if self.logits is None:
            self.logits = torch.empty(M, logits.shape[1], dtype=logits.dtype, device=self.device)
        self.logits[:bs].copy_(logits)
        # the greedy advance, for a next replay of the same graph (rows past the width bucket's
        # block table are never reached: run_greedy's caller grew the tables first)
        argmax_advance(self.logits[:bs], d[0:bs], d[M:M + bs], d[2 * M:2 * M + bs], d[3 * M:3 * M + bs],
                       d[4 * M:4 * M + bs], bt64[:bs, :w], self.ring, self.block_size, self.scratch_slot)

    def _capture(self, bs: int, w: int):
        return self.pool.capture(lambda: self._body(bs, w))


class PrefillGraphs:
    """Prefill-only steps of at most `max_tokens` tokens over at most `max_seqs` sequences,
    replayed from one graph per token bucket.

    Padding: the step's tokens are padded up to the bucket with token 0 at position 0 written to
    the scratch block; the sequence list is padded with empty sequences (cu_seqlens repeats its
    last value, so the attention kernel gives them no work); block tables are padded to the
    full width (the kernel reads only the blocks a sequence's context covers). The padded rows'
    outputs are never read: logits come from `logits_indices` rows only. Needs an attention
    backend whose prefill takes all its sizes from device tensors or the bucket (the Triton one).
    """

    def __init__(self, model, kv_caches, states, max_tokens: int, max_seqs: int, max_blocks: int, scratch_block: int,
                 block_size: int, device: torch.device, pool: GraphPool | None = None):
        self.model, self.kv_caches, self.states = model, kv_caches, states
        self.device = device
        self.max_tokens, self.max_seqs, self.max_blocks = max_tokens, max_seqs, max_blocks
        self.t_buckets = make_width_buckets(max_tokens, 16, 2)  # token buckets 16, 32, ..., max_tokens
        self.scratch_block, self.block_size = scratch_block, block_size
        self.scratch_slot = scratch_block * block_size
        T, P = max_tokens, max_seqs
        # host staging: [ids T | positions T | slots T | cu_q P+1 | cu_k P+1 | logits rows P | block table P * W]
        self.off = {"ids": 0, "pos": T, "slot": 2 * T, "cu_q": 3 * T, "cu_k": 3 * T + P + 1,
                    "rows": 3 * T + 2 * P + 2, "bt": 3 * T + 3 * P + 2}
        n = self.off["bt"] + P * max_blocks
        self.host = torch.zeros(n, dtype=torch.int64, pin_memory=device.type == "cuda")
        self.host_np = self.host.numpy()
        self.dev = torch.zeros(n, dtype=torch.int64, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: torch.Tensor | None = None  # (max_seqs, V) float32
        self.pool = pool or GraphPool(device)

    def supports(self, inp: StepInputs) -> bool:
        n_p = len(inp.cu_seqlens_q) - 1
        return (inp.num_decode_tokens == 0 and 0 < inp.num_prefill_tokens <= self.max_tokens
                and 0 < n_p <= self.max_seqs and len(inp.logits_indices) <= self.max_seqs
                and inp.prefill_block_tables.shape[1] <= self.max_blocks)

    def stage(self, inp: StepInputs) -> int:
        """Pack a supported step into the device buffer; returns its token bucket."""
        n, T = inp.num_prefill_tokens, pick(self.t_buckets, inp.num_prefill_tokens)
        P, W, h, o = self.max_seqs, self.max_blocks, self.host_np, self.off
        h[o["ids"]:o["ids"] + n] = inp.input_ids.numpy()
        h[o["ids"] + n:o["ids"] + T] = 0
        h[o["pos"]:o["pos"] + n] = inp.positions.numpy()
        h[o["pos"] + n:o["pos"] + T] = 0
        h[o["slot"]:o["slot"] + n] = inp.slot_mapping.numpy()
        h[o["slot"] + n:o["slot"] + T] = self.scratch_slot
        n_p = len(inp.cu_seqlens_q) - 1
        for key, cu in (("cu_q", inp.cu_seqlens_q), ("cu_k", inp.cu_seqlens_k)):
            h[o[key]:o[key] + n_p + 1] = cu
            h[o[key] + n_p + 1:o[key] + P + 1] = cu[-1]
        rows = inp.logits_indices.numpy()
        h[o["rows"]:o["rows"] + len(rows)] = rows
        h[o["rows"] + len(rows):o["rows"] + P] = 0
        bt = h[o["bt"]:].reshape(P, W)
        bt[:] = self.scratch_block
        tw = inp.prefill_block_tables.shape[1]
        bt[:n_p, :tw] = inp.prefill_block_tables.numpy()
        self.dev.copy_(self.host, non_blocking=True)
        return T

    def run(self, inp: StepInputs) -> torch.Tensor:
        """Logits (n_s, V) float32 of a prefill-only step."""
        T = self.stage(inp)
        if T not in self.graphs:
            self.graphs[T] = self.pool.capture(lambda: self.body(T))
        self.graphs[T].replay()
        return self.logits[:len(inp.logits_indices)]

    def capture_all(self) -> None:
        """Capture every token bucket now (largest first), on a step of empty sequences."""
        P, h, o = self.max_seqs, self.host_np, self.off
        h[:] = 0
        h[o["slot"]:o["cu_q"]] = self.scratch_slot
        h[o["bt"]:] = self.scratch_block
        self.dev.copy_(self.host)
        for T in reversed(self.t_buckets):
            if T not in self.graphs:
                self.graphs[T] = self.pool.capture(lambda: self.body(T))
        torch.cuda.synchronize(self.device)

    def body(self, T: int) -> None:
        """The padded step on the staged buffer (what each graph holds; runs eagerly too)."""
        P, W, d, o = self.max_seqs, self.max_blocks, self.dev, self.off
        meta = AttentionMetadata(
            num_prefill_tokens=T, num_decode_tokens=0, slot_mapping=d[o["slot"]:o["slot"] + T],
            cu_seqlens_q=d[o["cu_q"]:o["cu_q"] + P + 1].to(torch.int32),
            cu_seqlens_k=d[o["cu_k"]:o["cu_k"] + P + 1].to(torch.int32),
            max_seqlen_q=T, max_seqlen_k=W * self.block_size,
            prefill_block_tables=d[o["bt"]:].view(P, W).to(torch.int32), overrides=[None] * P)
        hidden = self.model(d[o["ids"]:o["ids"] + T], d[o["pos"]:o["pos"] + T], self.kv_caches, self.states, meta)
        logits = self.model.compute_logits(hidden[d[o["rows"]:o["rows"] + P]])  # (P, V) float32
        if self.logits is None:
            self.logits = torch.empty_like(logits)
        self.logits.copy_(logits)
