"""The engine on CPU with a tiny random model, checked against the straight-line reference."""

from __future__ import annotations

import os
import random

import pytest
import torch

from conftest import greedy, make_engine, run_all
from edgeserve_pod.engine.sequence import SamplingParams
from reference_llama import ReferenceLlama


def prompts(n: int, seed: int = 0, lo: int = 3, hi: int = 120) -> list[list[int]]:
    r = random.Random(seed)
    return [[r.randrange(3, 256) for _ in range(r.randrange(lo, hi))] for _ in range(n)]


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_qwen2"])
def test_greedy_matches_reference(fixture, request):
    model = request.getfixturevalue(fixture)
    ref = ReferenceLlama(model)
    ps = prompts(3, seed=1)
    eng = make_engine(model)
    for i, p in enumerate(ps):
        eng.add_request(str(i), p, greedy(8))
    out = run_all(eng)
    for i, p in enumerate(ps):
        assert out[str(i)] == ref.greedy(p, 8), f"request {i} (prompt length {len(p)})"


def test_batched_equals_alone_and_chunked_equals_unchunked(tiny_model):
    ps = prompts(6, seed=2, hi=200)
    alone = {}
    for i, p in enumerate(ps):
        eng = make_engine(tiny_model, max_num_batched_tokens=512, enable_prefix_caching=False)
        eng.add_request(str(i), p, greedy(12))
        alone[str(i)] = run_all(eng)[str(i)]
    # small budget: prompts are split into 32-token chunks and ride along with decodes
    eng = make_engine(tiny_model, max_num_batched_tokens=32, enable_prefix_caching=False)
    for i, p in enumerate(ps):
        eng.add_request(str(i), p, greedy(12))
    out = run_all(eng)
    assert {k: out[k] for k in alone} == alone


def test_prefix_cache_hit_identical_tokens_and_reports_cached(tiny_model):
    shared = prompts(1, seed=3, lo=70, hi=71)[0]
    a, b = shared + [5, 6, 7], shared + [9, 10]
    eng = make_engine(tiny_model)
    eng.add_request("a", a, greedy(6))
    out_a = run_all(eng)
    eng.add_request("b", b, greedy(6))
    out_b = run_all(eng)
    assert out_b[("b", "cached")] == (len(shared) // 16) * 16 == 64
    assert eng.stats().prefix_hit_tokens == 64
    cold = make_engine(tiny_model, enable_prefix_caching=False)
    cold.add_request("b", b, greedy(6))
    assert out_b["b"] == run_all(cold)["b"]
    assert out_a[("a", "cached")] == 0
    # the whole prompt cached: the last token is still computed, so the result is the same
    eng.add_request("a2", a, greedy(6))
    out_a2 = run_all(eng)
    assert out_a2["a2"] == out_a["a"] and out_a2[("a2", "cached")] == 64


def test_preemption_recompute_gives_same_tokens(tiny_model):
    ps = prompts(4, seed=4, lo=30, hi=40)
    big = make_engine(tiny_model, enable_prefix_caching=False)
    for i, p in enumerate(ps):
        big.add_request(str(i), p, greedy(40))
    want = run_all(big)
    # 4 sequences x up to 80 tokens need ~20 blocks; 12 forces preemption
    small = make_engine(tiny_model, kv_cache_blocks=12, enable_prefix_caching=False)
    for i, p in enumerate(ps):
        small.add_request(str(i), p, greedy(40))
    got = run_all(small)
    assert small.stats().num_preemptions > 0
    assert {str(i): got[str(i)] for i in range(4)} == {str(i): want[str(i)] for i in range(4)}
    assert small.stats().free_blocks == 12


def test_abort_frees_blocks_at_once(tiny_model):
    eng = make_engine(tiny_model, enable_prefix_caching=False)
    eng.add_request("x", list(range(3, 100)), greedy(50))
    eng.add_request("y", list(range(3, 40)), greedy(50))
    eng.step()
    eng.step()
    used = eng.stats().total_blocks - eng.stats().free_blocks
    assert used == 7 + 3
    assert eng.abort_request("x") is True
    assert eng.stats().total_blocks - eng.stats().free_blocks == 3
    assert eng.abort_request("x") is False
    outs = eng.step()
    cancelled = [o for o in outs if o.request_id == "x"]
    assert len(cancelled) == 1 and cancelled[0].finished and cancelled[0].finish_reason == "cancelled"
    eng.abort_request("y")
    assert eng.stats().free_blocks == eng.stats().total_blocks


def test_stop_tokens_and_max_tokens(tiny_model):
    p = prompts(1, seed=5)[0]
    eng = make_engine(tiny_model)
    eng.add_request("free", p, greedy(10))
    toks = run_all(eng)["free"]
    stop = toks[3]
    first = toks.index(stop)
    eng.add_request("stop", p, SamplingParams(max_tokens=10, stop_token_ids=[stop]))
    out = run_all(eng)
    assert out["stop"] == toks[:first + 1] and out[("stop", "reason")] == "stop"
    eng.add_request("len", p, greedy(4))
    out = run_all(eng)
    assert out["len"] == toks[:4] and out[("len", "reason")] == "length"


def test_seeded_sampling_is_reproducible_and_batch_independent(tiny_model):
    p = prompts(1, seed=6)[0]
    params = dict(max_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=1234, ignore_eos=True)
    eng = make_engine(tiny_model)
    eng.add_request("a", p, SamplingParams(**params))
    alone = run_all(eng)["a"]
    eng = make_engine(tiny_model)
    for i, q in enumerate(prompts(3, seed=7)):
        eng.add_request(f"other{i}", q, SamplingParams(max_tokens=12, temperature=0.7, ignore_eos=True))
    eng.add_request("a", p, SamplingParams(**params))
    assert run_all(eng)["a"] == alone
    eng.add_request("b", p, SamplingParams(**{**params, "seed": 99}))
    assert run_all(eng)["b"] != alone


def test_fp8_kv_cache_stays_close(tiny_model):
    from edgeserve_pod.engine.step_inputs import build_step_inputs

    p = prompts(1, seed=8, lo=60, hi=61)[0]

    def last_logits(kv_dtype):
        eng = make_engine(tiny_model, kv_dtype=kv_dtype, max_num_batched_tokens=32)
        eng.add_request("z", p, greedy(2))
        run_all(eng, max_steps=1)  # first 32-token chunk goes into the cache
        batch = eng.scheduler.schedule()  # second chunk attends over the (fp8) cached first one
        inp, _ = build_step_inputs(batch, 16)
        with torch.inference_mode():
            return eng.runner.forward(inp)[0], eng.runner.kv.dtype

    (a, da), (b, db) = last_logits("auto"), last_logits("fp8")
    assert da == torch.float32 and db == torch.float8_e4m3fn
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.05, f"fp8 KV logits drift {rel:.4f}"


@pytest.mark.parametrize("bad, msg", [
    (dict(prompt=[]), "empty"),
    (dict(prompt=[1, 2, 999]), "not an integer in"),
    (dict(prompt=[1] * 1024), "at most"),
    (dict(rid=""), "request_id"),
])
def test_bad_requests_get_clear_errors(tiny_model, bad, msg):
    eng = make_engine(tiny_model)
    with pytest.raises(ValueError, match=msg):
        eng.add_request(bad.get("rid", "r"), bad.get("prompt", [1, 2, 3]), greedy(4))
    eng.add_request("ok", [1, 2, 3], greedy(2))
    with pytest.raises(ValueError, match="already running"):
        eng.add_request("ok", [1, 2, 3], greedy(2))
    for kw in (dict(max_tokens=0), dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2), dict(seed=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**kw)


def test_config_validation(tiny_model, tmp_path):
    from edgeserve_pod.config import EngineConfig

    with pytest.raises(ValueError, match="HF-layout folder"):
        EngineConfig(model=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="device"):
        EngineConfig(model=tiny_model, device="tpu")
    with pytest.raises(ValueError, match="kv_dtype"):
        EngineConfig(model=tiny_model, kv_dtype="int3")
    with pytest.raises(ValueError, match="needs device='cuda'"):
        EngineConfig(model=tiny_model, attention_backend="triton")
    with pytest.raises(ValueError, match="scheduling_policy"):
        make_engine(tiny_model, scheduling_policy="nope")
    with pytest.raises(ValueError, match="needs attention_backend='sparse'"):
        EngineConfig(model=tiny_model, sparse_head_map=str(tmp_path / "map.json"))
    with pytest.raises(ValueError, match="is not a file"):
        EngineConfig(model=tiny_model, device="cuda", attention_backend="sparse", sparse_head_map=str(tmp_path / "no.json"))
    assert EngineConfig(model=tiny_model).model_id == tiny_model.rstrip("/").split("/")[-1]


def test_stats_and_kv_events(tiny_model):
    eng = make_engine(tiny_model)
    eng.add_request("a", list(range(3, 40)), greedy(3))  # 37 tokens: 2 full blocks
    assert eng.stats().waiting == 1 and eng.stats().waiting_prefill_tokens == 37
    run_all(eng)
    ev = eng.drain_kv_events()
    stored = [h for e in ev if e["type"] == "stored" for h in e["block_hashes"]]
    assert len(stored) == 2 and ev[0]["parent_hash"] is None
    assert eng.drain_kv_events() == []
    s = eng.stats()
    assert s.running == 0 and s.free_blocks == s.total_blocks and s.cached_blocks == 2


def test_sparse_backend_is_registered_with_its_head_map():
    """The engine resolves attention_backend='sparse' to SparseAttention, and a calibrated head map
    (tools/head_maps) loads into the config it is built with."""
    from edgeserve_pod.engine.model_runner import ATTENTION_BACKENDS, _import
    from edgeserve_pod.layers.attention_sparse import SparseAttention, SparseAttentionConfig

    assert _import(ATTENTION_BACKENDS, "sparse", "attention_backend") is SparseAttention
    here = os.path.dirname(os.path.abspath(__file__))
    head_map = os.path.join(here, "..", "edgeserve_pod", "tools", "head_maps", "smollm2-135m-instruct.json")
    cfg = SparseAttentionConfig.from_head_map(head_map)
    assert len(cfg.streaming) == 30 and all(len(r) == 3 for r in cfg.streaming)  # SmolLM2: 30 layers, 3 kv heads
    backend = SparseAttention(9, 3, 64, config=cfg)
    assert backend.streaming_kv_heads(0, "cpu").dtype == torch.bool


GPU = dict(device="cuda", dtype="float32", attention_backend="triton")  # decode graphs on (not enforce_eager)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_one_token_prefill_chunk_beside_decodes_keeps_decode_rows_aligned(tiny_model, device):
    """Budget 2: once "a" decodes, "b"'s prompt goes 1 token a step, not ending it, in the same
    step as "a"'s decode. Each row must sample from its own logits (on CUDA: decode graphs, and
    the graph's own argmax for greedy steps)."""
    kw = GPU if device == "cuda" else {}
    r = random.Random(0)
    base = [r.randrange(3, 256) for _ in range(80)]
    a, b = base[:32], base[40:42]
    alone = make_engine(tiny_model, enable_prefix_caching=False, max_num_batched_tokens=512, **kw)
    alone.add_request("a", a, greedy(4))
    want = run_all(alone)["a"]
    eng = make_engine(tiny_model, enable_prefix_caching=False, max_num_batched_tokens=2, max_num_seqs=2, **kw)
    eng.add_request("a", a, greedy(4))
    eng.add_request("b", b, greedy(4))
    mixed = []  # steps that held a 1-token chunk short of its prompt's end beside a decode
    schedule = eng.scheduler.schedule

    def spy():
        batch = schedule()
        if any(n == 1 < s.num_uncomputed for s, n in batch.items) and any(s.num_output_tokens for s, _ in batch.items):
            mixed.append(batch.num_prefill_seqs)
        return batch

    eng.scheduler.schedule = spy
    got = run_all(eng)
    assert mixed and all(mixed)  # the case happened, and the chunk rode as a prefill
    assert got["a"] == want
    if device == "cuda":
        assert eng.runner.graphs is not None and eng.runner.graphs.graphs  # ordinary decode steps still replay graphs


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_output_that_outgrows_the_kv_cache_ends_with_length(tiny_model, prefix_caching):
    """8 blocks of 16 hold 128 tokens, max_model_len 256: a 100-token prompt asking for 100 more
    ends at 128 tokens with "length" (it used to preempt itself and wait forever, and every
    request behind it with it)."""
    prompt = list(range(1, 101))
    ref = make_engine(tiny_model, enable_prefix_caching=False)
    ref.add_request("r", prompt, greedy(28))
    want = run_all(ref)["r"]
    eng = make_engine(tiny_model, kv_cache_blocks=8, block_size=16, max_model_len=256, enable_prefix_caching=prefix_caching)
    eng.add_request("r", prompt, greedy(100))
    eng.add_request("next", [5, 6, 7], greedy(3))  # waits behind it
    out = run_all(eng, max_steps=200)
    assert not eng.has_unfinished()
    assert eng.max_model_len == 128  # the KV cache's, not the configured 256: what the pod reports
    assert out["r"] == want and out[("r", "reason")] == "length"
    assert len(out["next"]) == 3 and out[("next", "reason")] == "length"
    assert eng.stats().free_blocks == 8
    with pytest.raises(ValueError, match="KV cache 128 tokens"):
        eng.add_request("big", [1] * 128, greedy(1))
    eng.add_request("fits", [1] * 127, greedy(5))  # room for one output token
    out = run_all(eng, max_steps=20)
    assert len(out["fits"]) == 1 and out[("fits", "reason")] == "length"


def test_preempted_sequence_on_its_own_cached_prefix_is_readmitted(tiny_model):
    """"old" (older, short) keeps decoding while "young" grows until the pool is full; "young"
    preempts itself and its 7 full blocks stay cached. When "old" finishes, "young" is alone
    with 7 of 8 blocks its own: the admission watermark must not hold it back."""
    eng = make_engine(tiny_model, kv_cache_blocks=8, block_size=16, max_model_len=256)
    young = list(range(1, 111))  # 110 tokens: 7 blocks hold it and 2 more
    eng.add_request("old", [5, 6], greedy(14))  # 16 tokens at most: one block
    eng.add_request("young", young, greedy(10))
    out = run_all(eng, max_steps=200)
    assert not eng.has_unfinished()
    assert eng.stats().num_preemptions >= 1 and eng.stats().prefix_hit_tokens >= 7 * 16
    ref = make_engine(tiny_model)
    ref.add_request("young", young, greedy(10))
    assert out["young"] == run_all(ref)["young"] and len(out["old"]) == 14
