"""The engine serving attention_backend='sparse' on CPU (the backend's torch path): with every
page within the budget and no streaming heads it must give the dense engine's greedy tokens;
with a head map and a small budget it must change them, stay independent of batching, and take
re-selection every k steps from the map or per request."""
import json

import pytest

from conftest import greedy, make_engine, run_all

PROMPTS = {"a": [(7 * i + 3) % 250 + 3 for i in range(150)], "b": [(11 * i + 5) % 250 + 3 for i in range(97)],
           "c": list(range(10, 60))}


def serve(model, prompts=PROMPTS, n=12, attention=None, **kw):
    eng = make_engine(model, block_size=16, **kw)
    for rid, p in prompts.items():
        eng.add_request(rid, p, greedy(n), attention=attention)
    out = run_all(eng)
    return {rid: out[rid] for rid in prompts}


def head_map(tmp_path, **kw):
    m = {"streaming": [[True, False], [False, False]], "sink_tokens": 16, "window_tokens": 32, "token_budget": 48, **kw}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(m))
    return str(path)


def test_sparse_engine_within_budget_equals_dense(tiny_model):
    dense = serve(tiny_model)
    assert serve(tiny_model, attention_backend="sparse") == dense  # budget 4096 > every context: all pages


def test_sparse_engine_with_head_map(tiny_model, tmp_path):
    dense = serve(tiny_model)
    path = head_map(tmp_path)
    batched = serve(tiny_model, attention_backend="sparse", sparse_head_map=path)
    assert batched != dense  # 150-token prompt, 48-token budget, a streaming head: sparsity is in effect
    alone = {rid: serve(tiny_model, {rid: p}, attention_backend="sparse", sparse_head_map=path)[rid]
             for rid, p in PROMPTS.items()}
    assert batched == alone
    # the per-request override turns it off again
    assert serve(tiny_model, attention={"sparse": False}, attention_backend="sparse", sparse_head_map=path) == dense


def test_reselect_every_from_map_and_request(tiny_model, tmp_path):
    every1 = serve(tiny_model, n=24, attention_backend="sparse", sparse_head_map=head_map(tmp_path))
    every4 = serve(tiny_model, n=24, attention_backend="sparse", sparse_head_map=head_map(tmp_path, reselect_every=4))
    by_req = serve(tiny_model, n=24, attention={"reselect_every": 4}, attention_backend="sparse",
                   sparse_head_map=head_map(tmp_path))
    assert every4 == by_req
    assert all(len(t) == 24 for t in every4.values())
    assert every4 != every1  # kept selections change what later steps attend


def final_chunk_logits(model, path, prompt, chunk, impl, cached=None):
    """Last-position logits of `prompt` through the sparse engine with `chunk` tokens per step
    (earlier chunks are run, the final one is forwarded here); `cached`: a prompt served first, so
    that `prompt` starts from its blocks in the prefix cache."""
    import dataclasses

    import torch

    from edgeserve_pod.engine.step_inputs import build_step_inputs

    gpu = dict(device="cuda", dtype="float32", enforce_eager=True) if torch.cuda.is_available() else {}
    eng = make_engine(model, block_size=16, attention_backend="sparse", sparse_head_map=path,
                      max_num_batched_tokens=chunk, **gpu)
    attn = eng.runner.attn
    attn.impl = impl  # "triton": native on a GPU, on CPU the kernels through the Triton interpreter (conftest)
    attn.cfg = dataclasses.replace(attn.cfg, prefill_block_m=32, prefill_block_n=16)  # window < prompt
    if cached is not None:
        eng.add_request("cached", cached, greedy(1))
        run_all(eng)
    eng.add_request("z", prompt, greedy(1))
    run_all(eng, max_steps=-(-(len(prompt) - (len(cached) // 16 * 16 if cached else 0)) // chunk) - 1)
    inp, rows = build_step_inputs(eng.scheduler.schedule(), 16)
    assert rows == [0] and inp.cu_seqlens_k == [0, len(prompt)]  # the final chunk samples
    with torch.inference_mode():
        return eng.runner.forward(inp)[0], len(prompt) - inp.cu_seqlens_q[1]  # logits, tokens before the chunk


def test_chunked_and_cached_prefill_equal_one_shot_on_triton(tiny_model, tmp_path):
    """Streaming heads in a prefill that follows cached tokens (later chunks of a chunked prefill,
    and a prefix-cache hit) on the Triton path get the one-shot block-sparse prefill's attention:
    the same last logits as the whole prompt in one step, and as the torch path."""
    import torch

    path = head_map(tmp_path)
    p = PROMPTS["a"]  # 150 tokens: sink 16 + window 32 leave most of the prompt out of a streaming row
    one_shot, before = final_chunk_logits(tiny_model, path, p, 256, "triton")
    assert before == 0
    chunked, before = final_chunk_logits(tiny_model, path, p, 48, "triton")
    assert before == 144
    hit, before = final_chunk_logits(tiny_model, path, p, 256, "triton", cached=p[:100] + [5, 6, 7])
    assert before == 96  # six full blocks from the prefix cache
    torch_chunked, _ = final_chunk_logits(tiny_model, path, p, 48, "torch")
    for got in (chunked, hit, torch_chunked):
        torch.testing.assert_close(got, one_shot, atol=1e-4, rtol=1e-4)
    dense, _ = final_chunk_logits(tiny_model, head_map(tmp_path, streaming=[[False, False], [False, False]]), p, 256,
                                  "triton")
    assert (one_shot - dense).abs().max() > 1e-3  # the streaming head changes the logits


BAD_OVERRIDES = [{"window_tokens": 2**40}, {"token_budget": 4096.0}, {"sparse": "false"}, {"sink_tokens": True},
                 {"sink_tokens": 0, "window_tokens": 0}, {"budget": 64}]


def test_bad_overrides_are_refused_at_admission_and_the_batch_runs_on(tiny_model, tmp_path):
    """A bad override fails add_request (its field named), never an engine step: the requests
    in flight finish with the tokens they get when served alone. The dense backend ignores the
    values of good overrides but refuses malformed ones the same way."""
    from edgeserve_pod.layers.attention_base import OverrideError

    for kw in (dict(attention_backend="sparse", sparse_head_map=head_map(tmp_path)), {}):
        alone = serve(tiny_model, {"a": PROMPTS["a"]}, n=4, **kw)
        eng = make_engine(tiny_model, block_size=16, **kw)
        eng.add_request("a", PROMPTS["a"], greedy(4))
        first = [t for o in eng.step() for t in o.new_token_ids]  # "a" is in flight
        for i, bad in enumerate(BAD_OVERRIDES):
            with pytest.raises(OverrideError) as e:
                eng.add_request(f"bad{i}", PROMPTS["b"], greedy(4), attention=bad)
            assert e.value.param.startswith("attention."), e.value.param
        out = run_all(eng)
        assert first + out["a"] == alone["a"] and not any(k.startswith("bad") for k in out if isinstance(k, str))
    # dense: a well-formed override is accepted and changes nothing
    assert serve(tiny_model, n=4, attention={"sparse": True, "token_budget": 16}) == serve(tiny_model, n=4)


def test_head_map_for_another_layer_count_fails_at_start_up(tiny_model, tmp_path):
    for m in ({"streaming": [[True, False]]}, {"streaming": [[True, False]] * 3},
              {"streaming": [[True, False]] * 2, "dense_heads": [[False, True]]}):
        path = tmp_path / "m.json"
        path.write_text(json.dumps(m))
        with pytest.raises(ValueError, match="layer rows; this model has 2 layers"):
            make_engine(tiny_model, block_size=16, attention_backend="sparse", sparse_head_map=str(path))
