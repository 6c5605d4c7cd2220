"""Continuous batching with chunked prefill (Sarathi-Serve).

Each step has a token budget. Running decodes go first (one token each), then partially
prefilled sequences continue, then waiting sequences are admitted; prefill chunks fill what is
left of the budget. When KV blocks run out, the policy's victim is preempted by recompute: its
blocks are freed (cached prefix blocks stay evictable, so the recompute is often cheap) and it
goes back to the waiting queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.policy import SchedulingPolicy
from edgeserve_pod.engine.sequence import Sequence, SeqStatus


@dataclass
class ScheduledBatch:
    """One step's work: (sequence, new tokens) pairs, prefill chunks first, then decode rows.

    A decode row is one token that reaches the end of its sequence (a decode, or the last
    token of a prompt), so every decode row samples: the decode-only forward and the decode
    graphs' in-graph argmax give one row of logits per decode row. A 1-token chunk that stops
    short of its prompt's end (the budget or the KV pool left one token) samples nothing and
    is a prefill chunk."""

    items: list[tuple[Sequence, int]] = field(default_factory=list)
    num_prefill_seqs: int = 0
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.items

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.items)


class RingSlots:
    """Ring slots [0, n) of the streaming heads' constant-size KV (streaming_kv="ring"): a
    sequence holds one while it runs (taken at admission, given back when it finishes, is
    aborted or preempted: a re-admitted sequence rebuilds its ring by the recompute)."""

    def __init__(self, n: int):
        self.n = n
        self._free = list(range(n - 1, -1, -1))  # pop() gives the lowest

    @property
    def num_free(self) -> int:
        return len(self._free)

    def take(self, seq: Sequence) -> None:
        assert seq.ring_slot is None, f"{seq.request_id} already holds ring slot {seq.ring_slot}"
        seq.ring_slot = self._free.pop()

    def give(self, seq: Sequence) -> None:
        if seq.ring_slot is not None:
            self._free.append(seq.ring_slot)
            seq.ring_slot = None


class Scheduler:
    def __init__(self, blocks: BlockManager, policy: SchedulingPolicy, max_num_batched_tokens: int, max_num_seqs: int,
                 ring_slots: bool = False):
        self.blocks = blocks
        self.policy = policy
        self.max_tokens = max_num_batched_tokens
        self.max_seqs = max_num_seqs
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        # one ring per running sequence (len(running) <= max_num_seqs, so admission always finds one)
        self.ring_slots = RingSlots(max_num_seqs) if ring_slots else None
        self.num_preemptions = 0
        # Keep a few blocks back when admitting new work, so running decodes rarely preempt.
        self.watermark = max(1, blocks.num_blocks // 100)

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues and free its blocks (finish or abort)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq)
        if self.ring_slots is not None:
            self.ring_slots.give(seq)

    def schedule(self) -> ScheduledBatch:
        budget = self.policy.token_budget(self.running, self.max_tokens)
        prefills: list[tuple[Sequence, int]] = []
        decodes: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        scheduled: set[int] = set()

        # 1. Decodes (and 1-token prefill tails) of running sequences, oldest first.
        for seq in sorted(self.running, key=lambda s: s.arrival_order):
            if seq.num_uncomputed != 1 or seq.status != SeqStatus.RUNNING or budget < 1:
                continue
            if not self._grow_or_preempt(seq, len(seq), scheduled, preempted):
                continue  # seq itself was preempted
            decodes.append((seq, 1))
            scheduled.add(id(seq))
            budget -= 1

        # 2. Running sequences part-way through their prefill.
        for seq in sorted(self.running, key=lambda s: s.arrival_order):
            if id(seq) in scheduled or seq.status != SeqStatus.RUNNING or budget < 1:
                continue
            n = self._fit_chunk(seq, min(seq.num_uncomputed, budget), reserve=0)
            if n == 0:
                continue
            prefills.append((seq, n))
            scheduled.add(id(seq))
            budget -= n

        # 3. Admit waiting sequences while budget, slots and blocks allow. One whose next uncached
        # block another sequence is prefilling now waits for it to be cached (computed once).
        # The watermark keeps blocks for running decodes; with none running it would only stall
        # a sequence whose own cached prefix leaves fewer free blocks than the watermark.
        if budget > 0 and not preempted:
            inflight = self.blocks.inflight_hashes(self.running)
            for seq in self.policy.order_waiting(self.waiting):
                if budget < 1 or len(self.running) >= self.max_seqs:
                    break
                if self.blocks.waits_for_inflight(seq, inflight):
                    continue
                cached = self.blocks.admit(seq)
                if seq.num_preemptions == 0:
                    seq.num_cached_tokens = cached
                reserve = self.watermark if self.running else 0
                n = self._fit_chunk(seq, min(seq.num_uncomputed, budget), reserve=reserve)
                if n == 0:
                    self.blocks.free(seq)  # give the cache hits back; head-of-line waits
                    seq.num_computed_tokens = 0
                    break
                self.waiting.remove(seq)
                seq.status = SeqStatus.RUNNING
                self.running.append(seq)
                if self.ring_slots is not None:
                    self.ring_slots.take(seq)
                prefills.append((seq, n))
                scheduled.add(id(seq))
                budget -= n
                self.blocks.note_inflight(inflight, seq)

        # Nothing fits but sequences hold blocks: preempt one so the rest can progress.
        if not prefills and not decodes and self.running:
            victim = self.policy.pick_victim(self.running)
            self._preempt(victim)
            preempted.append(victim)

        chunks = [(s, n) for s, n in prefills if n < s.num_uncomputed or n > 1]
        tails = [(s, n) for s, n in prefills if n == s.num_uncomputed == 1]  # a prompt's last token
        return ScheduledBatch(items=chunks + tails + decodes, num_prefill_seqs=len(chunks), preempted=preempted)

    # ---- helpers ----
    def _fit_chunk(self, seq: Sequence, want: int, reserve: int) -> int:
        """Largest chunk <= want whose blocks can be had now, keeping `reserve` blocks free."""
        B = self.blocks.block_size
        have = len(seq.block_table) * B - seq.num_computed_tokens
        free = self.blocks.num_free_blocks - reserve
        n = min(want, have + max(0, free) * B)
        if n <= 0:
            return 0
        ok = self.blocks.grow(seq, seq.num_computed_tokens + n)
        assert ok
        return n

    def _grow_or_preempt(self, seq: Sequence, num_tokens: int, scheduled: set[int], preempted: list[Sequence]) -> bool:
        while not self.blocks.grow(seq, num_tokens):
            candidates = [s for s in self.running if id(s) not in scheduled and s is not seq]
            victim = self.policy.pick_victim(candidates) if candidates else seq
            self._preempt(victim)
            preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        if self.ring_slots is not None:
            self.ring_slots.give(seq)
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(seq)
