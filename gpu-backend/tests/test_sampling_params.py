"""SamplingParams bounds: a top_k the sampler cannot hold in a tensor is refused when the request
is made, never inside a step (where it used to fail every request in flight)."""

from __future__ import annotations

import pytest

from conftest import make_engine, run_all
from edgeserve_pod.engine.sequence import TOP_K_MAX, SamplingParams
from edgeserve_pod import protocol


@pytest.mark.parametrize("top_k", [TOP_K_MAX + 1, 2**63, 10**20])
def test_top_k_past_int32_is_refused(top_k):
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(temperature=1.0, top_k=top_k)


def test_schema_and_sampling_params_share_the_top_k_bound():
    body = {"request_id": "x", "model": "m", "prompt_token_ids": [1], "max_tokens": 1}
    protocol.validate("GenerateRequest", {**body, "sampling": {"top_k": TOP_K_MAX}})
    with pytest.raises(Exception, match="top_k"):
        protocol.validate("GenerateRequest", {**body, "sampling": {"top_k": TOP_K_MAX + 1}})


def test_top_k_at_the_bound_keeps_every_token_and_fails_nobody(tiny_model):
    """top_k = 2^31 - 1 (far above the vocabulary) samples like top_k = 0 with the same seed, and
    the greedy request in the same steps finishes as it does alone."""
    p = [5, 6, 7, 8, 9, 10]
    e = make_engine(tiny_model)
    e.add_request("greedy", p, SamplingParams(max_tokens=8, ignore_eos=True))
    e.add_request("k_max", p, SamplingParams(max_tokens=8, ignore_eos=True, temperature=1.0, top_k=TOP_K_MAX, seed=7))
    e.add_request("k_off", p, SamplingParams(max_tokens=8, ignore_eos=True, temperature=1.0, top_k=0, seed=7))
    out = run_all(e)
    alone = make_engine(tiny_model)
    alone.add_request("greedy", p, SamplingParams(max_tokens=8, ignore_eos=True))
    assert out["k_max"] == out["k_off"] and len(out["k_max"]) == 8
    assert out["greedy"] == run_all(alone)["greedy"]
