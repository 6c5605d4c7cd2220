"""Real weights: the dequantized SmolLM2-135M-Instruct, engine vs the straight-line reference."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import greedy, make_engine, run_all
from edgeserve_pod.engine.sequence import SamplingParams
from edgeserve_pod.tools.gguf_to_hf import unpermute
from reference_llama import ReferenceLlama

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" in
# SmolLM2's tokenizer, and a second, longer prompt sharing its first block.
PROMPT = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
PARIS = [504, 3575, 282, 4649, 314, 7042, 30, 2]  # "The capital of France is Paris.<|im_end|>"
LONG = PROMPT + list(range(1000, 1040)) + PROMPT[1:]


@pytest.fixture(scope="module")
def outputs(smollm2):
    eng = make_engine(smollm2, max_num_batched_tokens=32)  # LONG is prefilled in 3 chunks
    eng.add_request("paris", PROMPT, SamplingParams(max_tokens=30))  # stops at EOS
    eng.add_request("long", LONG, greedy(8))
    return eng, run_all(eng)


def test_smollm2_knows_paris_and_stops_at_eos(outputs):
    eng, out = outputs
    assert 2 in eng.eos_token_ids
    assert out["paris"] == PARIS and out[("paris", "reason")] == "stop"
    assert out[("long", "reason")] == "length" and len(out["long"]) == 8


def test_smollm2_greedy_matches_reference(outputs, smollm2):
    _, out = outputs
    ref = ReferenceLlama(smollm2)
    assert ref.greedy_argmax(PROMPT, out["paris"]) == out["paris"]
    assert ref.greedy_argmax(LONG, out["long"]) == out["long"]


def test_unpermute_inverts_llama_cpp_permute():
    heads, d, inp = 3, 8, 5
    w = np.arange(heads * d * inp, dtype=np.float32).reshape(heads * d, inp)
    # llama.cpp's convert: reshape(n_head, 2, d/2, in).swapaxes(1, 2)
    permuted = w.reshape(heads, 2, d // 2, inp).swapaxes(1, 2).reshape(heads * d, inp)
    assert np.array_equal(unpermute(permuted, heads), w)
