"""Disaggregated prefill/decode: KV exported from one engine, sent through the wire format, and
imported into another gives the same greedy output as one engine doing everything."""

from __future__ import annotations

import random
import time

import pytest
import torch

from edgeserve_pod.engine.sequence import SamplingParams
from edgeserve_pod.kv_transfer import wire
from edgeserve_pod.kv_transfer.engine_kv import export_kv, import_kv

from _server_util import engine_config, write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def make_engine(model_dir, **kw):
    from edgeserve_pod.engine.engine import LLMEngine

    return LLMEngine(engine_config(model_dir, **kw))


def run(engine, rid, prompt, max_tokens):
    engine.add_request(rid, prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
    out, cached = [], None
    while engine.has_unfinished():
        for o in engine.step():
            if o.request_id == rid:
                out += o.new_token_ids
                cached = o.num_cached_tokens
    return out, cached


def test_disaggregated_greedy_output_equals_colocated(tiny):
    rng = random.Random(7)
    prompt = [rng.randrange(3, 256) for _ in range(150)]  # 9 full blocks + a 6-token tail
    colocated, cached = run(make_engine(tiny), "c", prompt, 24)
    assert cached == 0

    prefill = make_engine(tiny)
    run(prefill, "p", prompt, 1)
    payload = export_kv(prefill, prompt)
    assert len(payload.block_hashes) == 9
    t0 = time.perf_counter()
    msg = wire.encode(payload)
    received = wire.decode(msg)
    ms = (time.perf_counter() - t0) * 1e3
    print(f"\nKV transfer (encode+decode, in process): {len(msg)} bytes in {ms:.2f} ms")

    decode = make_engine(tiny)
    assert import_kv(decode, received) == 9
    assert import_kv(decode, received) == 0  # already there: nothing written twice
    out, cached = run(decode, "d", prompt, 24)
    assert cached == 9 * 16
    assert out == colocated
    # the receiver announces the blocks like any it computed, so the edge's index learns them
    stored = [h for e in decode.drain_kv_events() if e["type"] == "stored" for h in e["block_hashes"]]
    assert stored[:9] == received.block_hashes


def test_import_refuses_foreign_or_misshapen_kv(tiny):
    eng = make_engine(tiny)
    prompt = list(range(3, 40))
    run(eng, "p", prompt, 1)
    p = export_kv(eng, prompt)
    other = make_engine(tiny, model_id="other-model")
    with pytest.raises(wire.WireError, match="other-model"):
        import_kv(other, p)
    bad = wire.KvPayload(p.model, p.block_size, p.block_hashes, p.kv[:, :, :, :, :1].contiguous())
    with pytest.raises(wire.WireError, match="does not fit"):
        import_kv(eng, bad)


def test_import_stops_when_pages_run_out(tiny):
    big = make_engine(tiny)
    prompt = [(i * 7) % 250 + 3 for i in range(200)]
    run(big, "p", prompt, 1)
    p = export_kv(big, prompt)
    small = make_engine(tiny, kv_cache_blocks=8)  # watermark 1: room for 7
    assert import_kv(small, p) == 7


def test_import_keeps_the_cached_prefix_it_chains_onto(tiny):
    """The receiver caches block 0 of the prompt (evictable, oldest in LRU) and has no free page
    left: taking pages for blocks 1-4 must not evict block 0, or the imported blocks hang off a
    chain nobody can reach (lookup stops at block 0) and the request computes everything."""
    prompt = [3 + (i * 7) % 250 for i in range(81)]  # 5 full lookup blocks + 1 token
    src = make_engine(tiny)
    want, _ = run(src, "p", prompt, 6)
    payload = export_kv(src, prompt)
    assert len(payload.block_hashes) == 5
    dst = make_engine(tiny, kv_cache_blocks=6)  # watermark 1
    run(dst, "head", prompt[:17], 1)  # block 0 of the prompt: cached, evictable, oldest
    run(dst, "fill", [200 + i % 50 for i in range(64)], 1)  # the rest of the pool, evictable and newer
    assert len(dst.blocks.cache.lookup([bytes.fromhex(h) for h in payload.block_hashes])) == 1
    assert import_kv(dst, payload, prompt) == 4
    assert len(dst.blocks.cache.lookup([bytes.fromhex(h) for h in payload.block_hashes])) == 5
    assert dst.blocks.num_free_blocks == 6 and sum(dst.blocks.ref_counts) == 0  # nothing left held
    out, cached = run(dst, "d", prompt, 6)
    assert cached == 5 * 16 and out == want


def test_import_refuses_kv_that_is_not_the_prompts(tiny):
    """Imported blocks are named in the prefix cache and served to every later request on those
    hashes: a receive request only takes blocks that are a prefix of its own prompt's."""
    prompt = [3 + (i * 11) % 250 for i in range(70)]  # 4 lookup blocks
    src = make_engine(tiny)
    run(src, "p", prompt, 1)
    payload = export_kv(src, prompt)
    dst = make_engine(tiny)
    other = prompt[:40] + [7] + prompt[41:]  # differs in block 2
    with pytest.raises(wire.WireError, match="KV block 2 is not block 2 of this request's prompt"):
        import_kv(dst, payload, other)
    with pytest.raises(wire.WireError, match="KV block 3 is not"):
        import_kv(dst, payload, prompt[:60])  # the prompt has only 3 blocks to look up
    assert dst.blocks.cache.num_cached_blocks() == 0  # nothing was imported
    assert import_kv(dst, payload, prompt + [9] * 20) == 4  # a prefix of a longer prompt: fine


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m[:2], "at least a 4-byte"),
    (lambda m: m[:-4], "body is"),
    (lambda m: b"\xff\xff\xff\x7f" + m[4:], "does not fit"),
    (lambda m: m[:4] + b"x" + m[5:], "not JSON"),
])
def test_decode_rejects_broken_messages(tiny, mutate, needle):
    eng = make_engine(tiny)
    prompt = list(range(3, 40))
    run(eng, "p", prompt, 1)
    msg = wire.encode(export_kv(eng, prompt))
    with pytest.raises(wire.WireError, match=needle):
        wire.decode(mutate(msg))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_import_into_sparse_pod_rebuilds_quest_state(tiny, tmp_path, dtype):
    """Quest scores pages by each block's key min/max, kept beside the cache by the KV write. An
    imported block never went through that write: import must rebuild it, or every imported page
    scores 0 and a small token budget keeps the wrong pages (the greedy output then differs)."""
    import json

    head_map = tmp_path / "map.json"
    head_map.write_text(json.dumps({"streaming": [[False, False], [False, False]], "token_budget": 64}))
    kw = dict(attention_backend="sparse", sparse_head_map=str(head_map), dtype=dtype, max_model_len=512,
              max_num_batched_tokens=512)
    prompt = [(7 * i + 3) % 250 + 3 for i in range(300)]  # 18 full blocks + a tail; budget keeps 4 pages
    colocated, cached = run(make_engine(tiny, **kw), "c", prompt, 8)
    assert cached == 0

    prefill = make_engine(tiny, **kw)
    run(prefill, "p", prompt, 1)
    payload = wire.decode(wire.encode(export_kv(prefill, prompt)))
    decode = make_engine(tiny, **kw)
    assert import_kv(decode, payload) == 18

    hashes = [bytes.fromhex(h) for h in payload.block_hashes]
    src, dst = prefill.blocks.cache.lookup(hashes), decode.blocks.cache.lookup(hashes)
    for layer in range(len(decode.runner.states)):
        for key in ("kmin", "kmax"):  # exactly what the sender's KV write kept
            a, b = prefill.runner.states[layer][key][src], decode.runner.states[layer][key][dst]
            assert b.abs().amax() > 0
            assert torch.equal(a, b), (layer, key)
    out, cached = run(decode, "d", prompt, 8)
    assert cached == 18 * 16
    assert out == colocated
