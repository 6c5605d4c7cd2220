"""SloPolicy: admission order by slack, prefix grouping, batch last, victims by class; and the
policy driving the real Scheduler + BlockManager (CPU, no model)."""

from __future__ import annotations

import pytest

from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.policy import make_policy
from edgeserve_pod.engine.policy_slo import SloPolicy, SloPolicyConfig, apply_slo_update, expected_output_tokens
from edgeserve_pod.engine.scheduler import Scheduler
from edgeserve_pod.engine.sequence import SamplingParams, Sequence


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def seq(rid: str, prompt: list[int], slo: dict | None, *, arrived: float = 100.0, max_tokens: int = 64) -> Sequence:
    s = Sequence(rid, prompt, SamplingParams(max_tokens=max_tokens), slo)
    s.arrival_time = arrived
    return s


def ids(seqs: list[Sequence]) -> list[str]:
    return [s.request_id for s in seqs]


def test_registered_by_name():
    assert isinstance(make_policy("slo"), SloPolicy)


def test_least_slack_first_then_no_slo_then_batch():
    clock = Clock(100.0)
    pol = SloPolicy(SloPolicyConfig(prefill_tok_s=1000.0), clock)
    p = list(range(100))
    batch = seq("batch", p, {"class": "batch", "priority": 1})
    none = seq("none", [7] * 100, None)
    relaxed = seq("relaxed", [8] * 100, {"class": "interactive", "ttft_ms": 5000})
    urgent = seq("urgent", [9] * 100, {"class": "interactive", "ttft_ms": 500})
    # arrived 1 s ago with a 2 s deadline and 10 expected tokens at 50 ms: slack ~ 1000-100-450
    dl = seq("deadline", [10] * 100, {"class": "deadline", "deadline_ms": 2000, "expected_output_tokens": 10}, arrived=99.0)
    out = pol.order_waiting([batch, none, relaxed, urgent, dl])
    assert ids(out) == ["urgent", "deadline", "relaxed", "none", "batch"]
    assert pol.slack_ms(urgent) == pytest.approx(400.0)
    assert pol.slack_ms(dl) == pytest.approx(2000 - 1000 - 100 - 9 * 50)


def test_lost_causes_go_after_savable_requests():
    clock = Clock(100.0)
    pol = SloPolicy(SloPolicyConfig(prefill_tok_s=1000.0), clock)
    late = seq("late", [1] * 100, {"class": "interactive", "ttft_ms": 500}, arrived=99.0)  # slack -600
    ok = seq("ok", [2] * 100, {"class": "interactive", "ttft_ms": 3000})
    batch = seq("b", [3] * 100, {"class": "batch"})
    assert ids(pol.order_waiting([late, batch, ok])) == ["ok", "late", "b"]


def test_prefix_groups_are_admitted_back_to_back():
    pol = SloPolicy(SloPolicyConfig(group_tokens=4), Clock())
    a = [1, 2, 3, 4]
    b = [5, 6, 7, 8]
    reqs = [seq(f"r{i}", (a if i % 2 == 0 else b) + [100 + i] * 8, {"class": "batch"}) for i in range(6)]
    assert ids(pol.order_waiting(reqs)) == ["r0", "r2", "r4", "r1", "r3", "r5"]


def test_victim_is_lowest_class_then_most_slack():
    pol = SloPolicy(clock=Clock())
    inter = seq("i", [1] * 32, {"class": "interactive", "ttft_ms": 1000})
    batch_old = seq("b-old", [2] * 32, {"class": "batch"})
    batch_new = seq("b-new", [3] * 32, {"class": "batch"})
    dl_tight = seq("d-tight", [4] * 32, {"class": "deadline", "deadline_ms": 500})
    dl_loose = seq("d-loose", [5] * 32, {"class": "deadline", "deadline_ms": 50_000})
    assert pol.pick_victim([inter, batch_old, batch_new, dl_tight, dl_loose]).request_id == "b-new"
    assert pol.pick_victim([inter, dl_tight, dl_loose]).request_id == "d-loose"
    assert pol.pick_victim([inter, seq("x", [1] * 32, {"class": "interactive", "priority": 0})]).request_id == "x"


def test_output_estimate_grows_once_outlived():
    s = seq("s", [1] * 8, {"class": "interactive", "expected_output_tokens": 10}, max_tokens=100)
    assert expected_output_tokens(s) == 10
    s.token_ids += [5] * 10
    assert expected_output_tokens(s) == 15
    s.token_ids += [5] * 60
    assert expected_output_tokens(s) == 100  # capped at max_tokens
    assert expected_output_tokens(seq("n", [1] * 8, None, max_tokens=7)) == 7


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="prefill_tok_s"):
        SloPolicyConfig(prefill_tok_s=0)
    with pytest.raises(ValueError, match="group_tokens"):
        SloPolicyConfig(group_tokens=0)


def test_scheduler_admits_interactive_before_earlier_batch_work():
    """Token budget 64: the batch prompts arrived first, but the interactive one is admitted first
    and decodes while the batch prefill fills the rest of the budget."""
    def first_step(policy):
        sched = Scheduler(BlockManager(num_blocks=64, block_size=16, model_id="m"), policy,
                          max_num_batched_tokens=64, max_num_seqs=8)
        for i in range(3):
            sched.add(seq(f"batch{i}", [i + 1] * 96, {"class": "batch"}))
        sched.add(seq("chat", [9] * 40, {"class": "interactive", "ttft_ms": 1000}))
        return [(s.request_id, n) for s, n in sched.schedule().items]

    assert first_step(SloPolicy(clock=Clock(100.0))) == [("chat", 40), ("batch0", 24)]
    assert first_step(make_policy("fcfs")) == [("batch0", 64)]


def test_slo_update_reorders_admission_in_the_scheduler():
    """Two deadline requests with equal slack: the earlier one goes first. The edge then learns that
    the later one will write 80 tokens, not 10 (SloUpdate): its slack drops by 70 * tpot, and the
    scheduler admits it first at the next step."""
    def first_admitted(update: dict | None) -> str:
        sched = Scheduler(BlockManager(num_blocks=64, block_size=16, model_id="m"), SloPolicy(clock=Clock(100.0)),
                          max_num_batched_tokens=64, max_num_seqs=1)
        a = seq("a", [1] * 32, {"class": "deadline", "deadline_ms": 8000, "expected_output_tokens": 10}, max_tokens=200)
        b = seq("b", [2] * 32, {"class": "deadline", "deadline_ms": 8000, "expected_output_tokens": 10}, max_tokens=200)
        sched.add(a)
        sched.add(b)
        if update is not None:
            apply_slo_update(b, update)
        return [s.request_id for s, _ in sched.schedule().items][0]

    assert first_admitted(None) == "a"
    assert first_admitted({"expected_output_tokens": 80}) == "b"
    assert first_admitted({"deadline_ms": 1000}) == "b"  # a tighter deadline does the same


def test_slo_update_changes_the_preemption_victim():
    pol = SloPolicy(clock=Clock())
    x = seq("x", [1] * 32, {"class": "deadline", "deadline_ms": 9000, "expected_output_tokens": 10})
    y = seq("y", [2] * 32, {"class": "deadline", "deadline_ms": 9000, "expected_output_tokens": 10})
    assert pol.pick_victim([x, y]).request_id == "y"  # same slack: the later arrival
    # y turns out long: less slack, so x (now the one with more slack) is preempted instead
    apply_slo_update(y, {"expected_output_tokens": 120})
    assert pol.pick_victim([x, y]).request_id == "x"
    apply_slo_update(x, {"priority": 9})
    assert pol.pick_victim([x, y]).request_id == "y"
    assert x.slo["class"] == "deadline" and x.slo["deadline_ms"] == 9000


def test_slo_update_refuses_fields_it_does_not_own():
    s = seq("s", [1] * 8, {"class": "interactive", "ttft_ms": 500})
    with pytest.raises(ValueError, match="class"):
        apply_slo_update(s, {"class": "batch"})
    assert s.slo == {"class": "interactive", "ttft_ms": 500}


def test_token_budget_protects_a_tpot_target_with_learned_step_costs():
    pol = SloPolicy(SloPolicyConfig(tpot_headroom=0.8, min_prefill_tokens=32), Clock())
    chat = seq("chat", [1] * 20, {"class": "interactive", "ttft_ms": 1000, "tpot_ms": 150})
    chat.token_ids.append(7)  # first token out, next step decodes it
    chat.num_computed_tokens = 20
    chat.first_token_time = 100.0
    batch = seq("b", [2] * 20, {"class": "batch"})
    assert pol.token_budget([chat], 512) == 512  # nothing learned yet: the configured budget
    pol.observe_step(prefill_tokens=500, decode_tokens=12, seconds=0.512)  # 1 ms per token
    pol.observe_step(prefill_tokens=0, decode_tokens=4, seconds=0.010)  # a decode-only step: 10 ms
    assert pol.ms_per_token == pytest.approx(1.0) and pol.decode_step_ms == pytest.approx(10.0)
    # 0.8 * 150 - 10 = 110 ms of prefill at 1 ms/token, plus the one decode
    assert pol.token_budget([chat], 512) == 111
    assert pol.token_budget([batch], 512) == 512  # no TPOT target decoding: no cap
    assert pol.token_budget([chat], 64) == 64
    pol.observe_step(prefill_tokens=100, decode_tokens=0, seconds=100.0)  # the pod got very slow
    assert pol.token_budget([chat], 512) == 1 + 32  # prefill keeps its floor


def test_scheduler_shrinks_the_prefill_chunk_while_an_interactive_request_decodes():
    pol = SloPolicy(SloPolicyConfig(), Clock())
    pol.observe_step(prefill_tokens=256, decode_tokens=0, seconds=0.256)  # 1 ms per token
    sched = Scheduler(BlockManager(num_blocks=128, block_size=16, model_id="m"), pol,
                      max_num_batched_tokens=512, max_num_seqs=8)
    chat = seq("chat", [1] * 40, {"class": "interactive", "ttft_ms": 1000, "tpot_ms": 100})
    sched.add(chat)
    first = sched.schedule()
    assert [(s.request_id, n) for s, n in first.items] == [("chat", 40)]
    chat.num_computed_tokens = 40
    chat.token_ids.append(5)
    chat.first_token_time = 100.0
    sched.add(seq("rag", [3] * 900, {"class": "deadline", "deadline_ms": 30_000}))
    step = {s.request_id: n for s, n in sched.schedule().items}
    assert step["chat"] == 1 and step["rag"] == 80  # 0.8 * 100 ms at 1 ms/token, not the 511 left
    # once the chat is done, prefill gets the whole budget again
    sched.remove(chat)
    assert {s.request_id: n for s, n in sched.schedule().items} == {"rag": 512}
