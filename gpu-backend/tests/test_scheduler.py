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


def _groups(batch):
    """(prefill group, decode group) as (id, tokens) lists."""
    items = [(s.request_id, n) for s, n in batch.items]
    return items[:batch.num_prefill_seqs], items[batch.num_prefill_seqs:]


def _check_decode_rows_sample(batch, block_size):
    """The invariant the decode-only forward and the decode graphs rely on: one logits row per
    decode row (every decode row ends its sequence)."""
    from edgeserve_pod.engine.step_inputs import build_step_inputs

    inp, rows = build_step_inputs(batch, block_size)
    if inp.num_prefill_tokens == 0:
        assert len(inp.logits_indices) == inp.num_decode_tokens
    assert all(r >= 0 for r in rows[batch.num_prefill_seqs:])


def test_one_token_chunk_left_by_the_budget_is_a_prefill_not_a_decode_row():
    bm = BlockManager(100, 16, "m", enable_prefix_caching=False)
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=2, max_num_seqs=2)
    a = Sequence("a", list(range(3)), SamplingParams())
    b = Sequence("b", list(range(10, 15)), SamplingParams())
    sch.add(a)
    finish_step(sch.schedule())  # a: 2 of 3 prompt tokens
    finish_step(sch.schedule())  # a: its last prompt token (a 1-token tail, samples) -> a decodes
    sch.add(b)
    batch = sch.schedule()  # a's decode takes 1, b gets the last 1 of the budget: not its prompt's end
    assert _groups(batch) == ([("b", 1)], [("a", 1)])
    _check_decode_rows_sample(batch, 16)


def test_one_token_chunk_left_by_the_kv_pool_is_a_prefill_not_a_decode_row():
    bm = BlockManager(3, 4, "m", enable_prefix_caching=False)
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=9, max_num_seqs=4)
    sch.watermark = 0
    a, b = Sequence("a", [1, 2], SamplingParams()), Sequence("b", list(range(10, 22)), SamplingParams())
    sch.add(a)
    sch.add(b)
    first = sch.schedule()
    assert [(s.request_id, n) for s, n in first.items] == [("a", 2), ("b", 7)] and bm.num_free_blocks == 0
    finish_step(first)
    # a decodes in its own block; b has one free slot in its last block and the pool is empty
    batch = sch.schedule()
    assert _groups(batch) == ([("b", 1)], [("a", 1)])
    _check_decode_rows_sample(batch, 4)


def test_prompt_tail_of_one_token_stays_a_decode_row():
    """A 1-token item that ends its prompt samples, so it keeps the decode path (and its graph)."""
    bm = BlockManager(100, 16, "m", enable_prefix_caching=False)
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=4, max_num_seqs=2)
    a = Sequence("a", list(range(5)), SamplingParams())
    sch.add(a)
    finish_step(sch.schedule())  # 4 of 5
    batch = sch.schedule()
    assert _groups(batch) == ([], [("a", 1)])
    _check_decode_rows_sample(batch, 16)


def test_build_step_inputs_refuses_a_decode_row_that_samples_nothing():
    import pytest

    from edgeserve_pod.engine.scheduler import ScheduledBatch
    from edgeserve_pod.engine.step_inputs import build_step_inputs

    bm = BlockManager(10, 4, "m", enable_prefix_caching=False)
    s = Sequence("s", list(range(6)), SamplingParams())
    assert bm.grow(s, 6)
    with pytest.raises(ValueError, match="prefill group"):
        build_step_inputs(ScheduledBatch(items=[(s, 1)], num_prefill_seqs=0), 4)


def test_lone_sequence_on_its_own_cached_prefix_is_admitted_past_the_watermark():
    """Preempted with all but one block of the pool cached, and then alone: the watermark must
    not keep it waiting (nothing running would ever free a block)."""
    bm = BlockManager(4, 4, "m")
    sch = Scheduler(bm, FCFSPolicy(), max_num_batched_tokens=64, max_num_seqs=4)
    assert sch.watermark == 1
    a = Sequence("a", list(range(100, 113)), SamplingParams())  # 13 tokens: 3 full blocks + 1
    sch.add(a)
    _run(sch.schedule(), bm)
    sch._preempt(a)  # as if a younger arrival's preemption had hit it
    assert bm.cache.num_cached_blocks() == 3 and not sch.running
    batch = sch.schedule()
    assert [(s.request_id, n) for s, n in batch.items] == [("a", 2)]  # 12 cached: a's last prompt token and output
    assert a.num_computed_tokens == 12
