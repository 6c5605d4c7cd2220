"""Multi-step decode (EngineConfig.num_decode_steps): k decode steps per scheduling round with
the tokens fed back on the device must give exactly what k single steps give: greedy and
seeded tokens, stop tokens and max_tokens mid-round, prefix-cache commits, outputs merged per
request. On CPU the eager path runs the same rounds; the CUDA-graph path is run by
bench/pod_engine.py on the GPU."""

import pytest
import torch

from conftest import make_engine, run_all
from edgeserve_pod.engine.sequence import SamplingParams


def _run(model, k, reqs, add_late=None, **kw):
    eng = make_engine(model, num_decode_steps=k, **kw)
    for rid, (prompt, params) in reqs.items():
        eng.add_request(rid, prompt, params)
    out, rounds = {}, 0
    while eng.has_unfinished():
        outs = eng.step()
        rounds += 1
        for o in outs:
            out.setdefault(o.request_id, []).extend(o.new_token_ids)
            if o.finished:
                out[(o.request_id, "reason")] = o.finish_reason
        if add_late and rounds == 3:
            rid, prompt, params = add_late
            eng.add_request(rid, prompt, params)
    return out, rounds, eng


PROMPTS = [[5, 9, 23, 7], [11, 2, 2, 3, 17, 19, 40, 41, 3], list(range(30, 50))]


@pytest.mark.parametrize("k", [3, 8])
def test_multi_step_equals_single_steps(tiny_model, k):
    reqs = {
        "greedy": (PROMPTS[0], SamplingParams(max_tokens=23, ignore_eos=True)),
        "seeded": (PROMPTS[1], SamplingParams(max_tokens=17, temperature=0.9, top_k=20, seed=7, ignore_eos=True)),
        "long": (PROMPTS[2], SamplingParams(max_tokens=40, ignore_eos=True)),
    }
    want, r1, _ = _run(tiny_model, 1, reqs)
    got, rk, eng = _run(tiny_model, k, reqs)
    assert got == want
    assert rk < r1  # fewer scheduling rounds, or the feature did nothing
    assert eng.blocks.num_free_blocks == eng.blocks.num_blocks  # every block back (cached ones evictable)


def test_stop_token_mid_round_drops_the_rest(tiny_model):
    base = {"a": (PROMPTS[0], SamplingParams(max_tokens=30, ignore_eos=True))}
    free_run, _, _ = _run(tiny_model, 1, base)
    stop = free_run["a"][6]  # a token the model emits at step 7
    first = free_run["a"].index(stop)
    reqs = {"a": (PROMPTS[0], SamplingParams(max_tokens=30, stop_token_ids=[stop], ignore_eos=True))}
    want, _, _ = _run(tiny_model, 1, reqs)
    got, _, _ = _run(tiny_model, 8, reqs)
    assert got == want and got["a"] == free_run["a"][:first + 1] and got[("a", "reason")] == "stop"


def test_new_request_ends_the_round_and_prefix_cache_still_hits(tiny_model):
    late = ("late", PROMPTS[2] + [3, 4], SamplingParams(max_tokens=9, ignore_eos=True))
    reqs = {"first": (PROMPTS[2], SamplingParams(max_tokens=35, ignore_eos=True))}
    want, _, _ = _run(tiny_model, 1, reqs, add_late=late)
    got, _, eng = _run(tiny_model, 6, reqs, add_late=late)
    assert got == want
    assert eng.stats().prefix_hit_tokens >= 16  # blocks committed during multi-step rounds were reused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode CUDA graphs need a GPU")
@pytest.mark.parametrize("k", [1, 5, 8])
def test_greedy_graph_rounds_equal_eager_steps_on_gpu(tiny_model, k):
    """On a GPU, greedy decode-only rounds replay one graph k times (the argmax and the position /
    slot advance run inside the graph); tokens must equal eager single steps, across block
    boundaries (block size 16, 40 tokens) and with a batch padded up to its bucket (3 -> 4)."""
    reqs = {str(i): (p, SamplingParams(max_tokens=40, ignore_eos=True)) for i, p in enumerate(PROMPTS)}
    gpu = dict(device="cuda", dtype="float32", attention_backend="triton")
    want, _, _ = _run(tiny_model, 1, reqs, enforce_eager=True, **gpu)
    got, _, eng = _run(tiny_model, k, reqs, **gpu)
    assert eng.runner.graphs is not None and eng.runner.graphs.graphs
    assert got == want


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode CUDA graphs need a GPU")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_decode_graph_logits_equal_eager_on_first_use(tiny_model, backend):
    """A decode graph replayed on the step that captured it (the torch backend captures its
    width buckets on first use) gives the eager step's logits: the capture's warm-up runs end
    with the greedy advance, and the step's inputs must be staged again before the replay.
    Logits, not tokens: a random model's greedy tokens hide a wrong position."""
    from edgeserve_pod.engine.scheduler import ScheduledBatch
    from edgeserve_pod.engine.sequence import Sequence
    from edgeserve_pod.engine.step_inputs import build_step_inputs

    eng = make_engine(tiny_model, device="cuda", dtype="float32", attention_backend=backend, num_decode_steps=1)
    B, runner = eng.block_size, eng.runner
    seq = Sequence("s", PROMPTS[2], SamplingParams(max_tokens=4))
    assert eng.blocks.grow(seq, len(seq) + 1)
    with torch.inference_mode():
        inp, _ = build_step_inputs(ScheduledBatch(items=[(seq, len(seq))], num_prefill_seqs=1), B)
        runner.forward(inp)  # prefill: the prompt's KV
        seq.num_computed_tokens = len(seq)
        seq.token_ids.append(7)
        inp, _ = build_step_inputs(ScheduledBatch(items=[(seq, 1)], num_prefill_seqs=0), B)
        meta = inp.to_metadata(runner.device)
        eager = runner.model.logits(inp.input_ids.cuda(), inp.positions.cuda(), runner.kv_caches, runner.states, meta).clone()
        n_graphs = len(runner.graphs.graphs)
        graph = runner.graphs.run(inp).clone()
    if backend == "torch":
        assert len(runner.graphs.graphs) == n_graphs + 1  # this step captured its graph
    torch.testing.assert_close(graph, eager, atol=1e-4, rtol=1e-4)
