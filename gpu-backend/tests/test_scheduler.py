"""Scheduler decisions without a model: budget, decodes first, chunking, preemption."""

from __future__ import annotations

from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.policy import FCFSPolicy
from edgeserve_pod.engine.scheduler import Scheduler
from edgeserve_pod.engine.sequence import SamplingParams, Sequence


def finish_step(batch):
    """What the engine does after running a batch: advance, and append a token when sampled."""
    for s, n in batch.items:
        s.num_computed_tokens += n
        if s.num_computed_tokens == len(s):
            s.token_ids.append(7)


def test_token_budget_decodes_first_then_prefill_chunks():
    bm = BlockManager(100, 16, "m", enable_prefix_caching=False)
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=40, max_num_seqs=8)
    a = Sequence("a", list(range(20)), SamplingParams())
    sch.add(a)
    b1 = sch.schedule()
    assert [(s.request_id, n) for s, n in b1.items] == [("a", 20)]
    finish_step(b1)
    b = Sequence("b", list(range(100)), SamplingParams())
    sch.add(b)
    b2 = sch.schedule()
    # a decodes (1 token), b's prefill takes the other 39; prefills are packed first
    assert [(s.request_id, n) for s, n in b2.items] == [("b", 39), ("a", 1)]
    assert b2.num_prefill_seqs == 1 and b2.num_tokens == 40
    finish_step(b2)
    b3 = sch.schedule()
    assert [(s.request_id, n) for s, n in b3.items] == [("b", 39), ("a", 1)]
    finish_step(b3)
    b4 = sch.schedule()
    assert [(s.request_id, n) for s, n in b4.items] == [("b", 22), ("a", 1)]


def test_max_num_seqs_limits_admission():
    bm = BlockManager(100, 16, "m")
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=100, max_num_seqs=2)
    for i in range(3):
        sch.add(Sequence(str(i), [i] * 5, SamplingParams()))
    b = sch.schedule()
    assert [s.request_id for s, _ in b.items] == ["0", "1"] and len(sch.waiting) == 1


def test_preempts_latest_arrival_when_blocks_run_out():
    bm = BlockManager(4, 4, "m", enable_prefix_caching=False)
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=64, max_num_seqs=4)
    sch.watermark = 0
    a, b = Sequence("a", [1] * 8, SamplingParams()), Sequence("b", [2] * 7, SamplingParams())
    sch.add(a)
    sch.add(b)
    finish_step(sch.schedule())  # a: 2 blocks, b: 2 blocks; a now has 9 tokens and needs a third
    batch = sch.schedule()
    assert [s.request_id for s in batch.preempted] == ["b"]
    assert [(s.request_id, n) for s, n in batch.items] == [("a", 1)]
    assert b.num_computed_tokens == 0 and b in sch.waiting and not b.block_table


def _run(batch, bm):
    """finish_step plus what the engine also does after a step: name the newly full blocks."""
    finish_step(batch)
    for s, _ in batch.items:
        bm.commit(s)


def test_shared_prefix_waits_for_the_running_prefill_and_is_computed_once():
    bm = BlockManager(100, 16, "m")
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=200, max_num_seqs=8)
    shared = list(range(100, 148))  # 3 full blocks
    a = Sequence("a", shared + [1] * 12, SamplingParams())
    b = Sequence("b", shared + [2] * 12, SamplingParams())
    c = Sequence("c", list(range(500, 540)), SamplingParams())
    for s in (a, b, c):
        sch.add(s)
    first = sch.schedule()
    # b's first block is a's prefill: b waits a step; c, unrelated, is admitted behind it
    assert [(s.request_id, n) for s, n in first.items] == [("a", 60), ("c", 40)]
    assert b in sch.waiting
    _run(first, bm)
    second = sch.schedule()
    assert ("b", 12) in [(s.request_id, n) for s, n in second.items]
    assert b.num_cached_tokens == 48


def test_no_wait_when_the_prefilling_sequence_left_the_batch():
    bm = BlockManager(100, 16, "m")
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=200, max_num_seqs=8)
    a = Sequence("a", list(range(100, 160)), SamplingParams())
    b = Sequence("b", list(range(100, 150)), SamplingParams())
    sch.add(a)
    sch.schedule()  # a admitted, its blocks not named yet
    inflight = bm.inflight_hashes(sch.running)
    assert bm.waits_for_inflight(b, inflight)
    sch.remove(a)  # aborted mid-prefill: nothing will name those blocks
    assert not bm.waits_for_inflight(b, bm.inflight_hashes(sch.running))
    sch.add(b)
    assert [(s.request_id, n) for s, n in sch.schedule().items] == [("b", 50)]
