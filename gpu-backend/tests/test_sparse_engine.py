"""The engine serving attention_backend='sparse' on CPU (the backend's torch path): with every
page within the budget and no streaming heads it must give the dense engine's greedy tokens;
with a head map and a small budget it must change them, stay independent of batching, and take
re-selection every k steps from the map or per request."""
import json

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
