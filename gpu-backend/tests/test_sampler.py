"""Sampler edge cases: values that pass validation but sit at the ends of float32's range must
still give a token of the distribution they describe (never token 0 from NaN)."""

from __future__ import annotations

import pytest
import torch

from conftest import greedy, make_engine, run_all
from edgeserve_pod.engine.sampler import Sampler, SamplingBatch
from edgeserve_pod.engine.sequence import SamplingParams

LOGITS = [1.0, 5.0, 2.0, -3.0]  # argmax 1


def _batch(n, temperature=1.0, top_k=0, top_p=1.0):
    return SamplingBatch(torch.full((n,), temperature), torch.full((n,), top_k, dtype=torch.int64),
                         torch.full((n,), top_p, dtype=torch.float32), [None] * n, False, top_k > 0, top_p < 1.0)


@pytest.mark.parametrize("temperature", [1e-39, 1e-30, 1e-6])
def test_tiny_temperature_is_greedy(temperature):
    s = Sampler(torch.device("cpu"), 0)
    logits = torch.tensor([LOGITS] * 8)
    assert s(logits, _batch(8, temperature)).tolist() == [1] * 8
    assert s(logits, _batch(8, temperature, top_k=3, top_p=0.5)).tolist() == [1] * 8


@pytest.mark.parametrize("top_p", [1e-300, 1e-50, 1e-3])
def test_top_p_below_float32_keeps_the_top_token(top_p):
    assert torch.tensor(1e-300, dtype=torch.float32).item() == 0.0  # what the batch tensor holds
    s = Sampler(torch.device("cpu"), 0)
    logits = torch.tensor([LOGITS] * 8)
    assert s(logits, _batch(8, 1.0, top_p=top_p)).tolist() == [1] * 8
    assert s(logits, _batch(8, 2.0, top_k=2, top_p=top_p)).tolist() == [1] * 8


def test_non_finite_logits_take_the_greedy_token():
    s = Sampler(torch.device("cpu"), 0)
    logits = torch.tensor([[1.0, 5.0, float("inf"), -3.0], LOGITS])
    out = s(logits, _batch(2, 1.0))
    assert out[0].item() == 2  # the +inf logit, not token 0
    assert 0 <= out[1].item() < 4
    assert s(logits, _batch(2, 0.7, top_k=3)).tolist()[0] == 2


def test_ordinary_sampling_still_draws_from_the_distribution():
    s = Sampler(torch.device("cpu"), 0)
    logits = torch.tensor([[0.0, 0.0, 0.0, -1e4]] * 3000)  # three equal tokens, one impossible
    toks = s(logits, _batch(3000, 1.0)).tolist()
    counts = [toks.count(t) for t in range(4)]
    assert counts[3] == 0 and all(800 < c < 1200 for c in counts[:3]), counts


def test_engine_tiny_temperature_and_top_p_equal_greedy(tiny_model):
    p = [5, 6, 7, 8, 9, 10]
    eng = make_engine(tiny_model)
    eng.add_request("g", p, greedy(8))
    eng.add_request("t", p, SamplingParams(max_tokens=8, ignore_eos=True, temperature=1e-39, seed=1))
    eng.add_request("p", p, SamplingParams(max_tokens=8, ignore_eos=True, temperature=1.0, top_p=1e-300, seed=2))
    eng.add_request("s", p, SamplingParams(max_tokens=8, ignore_eos=True, temperature=1e-30))
    out = run_all(eng)
    assert out["t"] == out["g"] and out["p"] == out["g"] and out["s"] == out["g"]
