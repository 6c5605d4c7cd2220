"""The pod server on the real engine (tiny random Llama on CPU): streaming, cancellation, health,
KV events, metrics."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.block_hash import block_hashes
from edgeserve_pod.engine.sequence import SamplingParams
from _server_util import (BLOCK, MODEL_ID, gen_body, health, pod, read_stream, real_engine_factory, tokens_of,
                          wait_for, write_tiny)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def offline_tokens(tiny, prompt, max_tokens, **params):
    """The same request run on a fresh engine with no server in between."""
    eng = real_engine_factory(tiny)()
    eng.add_request("x", prompt, SamplingParams(max_tokens=max_tokens, **params))
    out = []
    while eng.has_unfinished():
        out += [t for o in eng.step() for t in o.new_token_ids]
    return out


async def test_generate_streams_the_engines_tokens(tiny):
    prompt = list(range(10, 50))
    async with pod(real_engine_factory(tiny)) as (client, st):
        resp = await client.post("/v1/generate", json=gen_body("g-1", prompt, max_tokens=12, ignore_eos=True))
        recs = await read_stream(resp)
    assert [r["type"] for r in recs[:-1]] == ["tokens"] * (len(recs) - 1)
    final = recs[-1]
    assert final["type"] == "final" and final["finish_reason"] == "length" and final["request_id"] == "g-1"
    toks = tokens_of(recs)
    assert toks == offline_tokens(tiny, prompt, 12, ignore_eos=True)
    assert final["usage"] == {"prompt_tokens": 40, "completion_tokens": 12, "cached_tokens": 0}
    t_ms = [t for r in recs[:-1] for t in r["t_ms"]]
    assert len(t_ms) == 12 and t_ms == sorted(t_ms) and t_ms[0] > 0
    assert final["timing"]["ttft_ms"] == pytest.approx(t_ms[0]) and final["timing"]["total_ms"] >= t_ms[-1]


async def test_sampling_fields_reach_the_engine(tiny):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    sampling = {"temperature": 1.3, "top_p": 0.8, "top_k": 20, "seed": 42}
    async with pod(real_engine_factory(tiny)) as (client, st):
        a = tokens_of(await read_stream(await client.post("/v1/generate", json=gen_body("s-1", prompt, 10, sampling=sampling, ignore_eos=True))))
        b = tokens_of(await read_stream(await client.post("/v1/generate", json=gen_body("s-2", prompt, 10, sampling=sampling, ignore_eos=True))))
        greedy = tokens_of(await read_stream(await client.post("/v1/generate", json=gen_body("s-3", prompt, 10, ignore_eos=True))))
    assert a == b == offline_tokens(tiny, prompt, 10, temperature=1.3, top_p=0.8, top_k=20, seed=42, ignore_eos=True)
    assert a != greedy  # the seeded sample differs from argmax on random weights


async def test_stop_token_ends_with_stop(tiny):
    prompt = list(range(20, 40))
    ref = offline_tokens(tiny, prompt, 6, ignore_eos=True)
    async with pod(real_engine_factory(tiny)) as (client, st):
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("st", prompt, 6, stop_token_ids=[ref[2]], ignore_eos=True)))
    assert tokens_of(recs) == ref[:ref.index(ref[2]) + 1]
    assert recs[-1]["finish_reason"] == "stop"


async def test_concurrent_streams_each_get_their_own_tokens(tiny):
    prompts = [[7 + i] * (5 + 7 * i) for i in range(4)]
    async with pod(real_engine_factory(tiny)) as (client, st):
        async def one(i):
            return tokens_of(await read_stream(await client.post("/v1/generate", json=gen_body(f"c-{i}", prompts[i], 8 + i, ignore_eos=True))))
        got = await asyncio.gather(*(one(i) for i in range(4)))
    for i in range(4):
        assert got[i] == offline_tokens(tiny, prompts[i], 8 + i, ignore_eos=True)


async def test_closed_connection_cancels_and_frees_blocks(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        total = (await health(client))["load"]["total_blocks"]
        resp = await client.post("/v1/generate", json=gen_body("gone", list(range(100)), max_tokens=200, ignore_eos=True))
        assert resp.status == 200
        await resp.content.readline()  # the first tokens record: the request holds its blocks now
        busy = (await health(client))["load"]
        assert busy["running"] == 1 and busy["free_blocks"] < total
        resp.close()  # drop the connection mid-stream

        async def freed():
            h = await health(client)
            return h["load"]["running"] == 0 and h["load"]["free_blocks"] == total and st.loop.num_live == 0

        await wait_for(freed, what="blocks back in the pool after disconnect")
        # it was cancelled, not run to max_tokens
        assert 'edgeserve_pod_requests_finished_total{finish_reason="cancelled"} 1.0' in await (await client.get("/metrics")).text()
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("after", max_tokens=3)))
        assert recs[-1]["type"] == "final"


async def test_closed_connection_cancels_a_request_still_waiting_in_the_queue(tiny):
    async with pod(real_engine_factory(tiny, max_num_seqs=1)) as (client, st):
        running = await client.post("/v1/generate", json=gen_body("runs", list(range(20)), max_tokens=250, ignore_eos=True))
        await running.content.readline()
        queued = await client.post("/v1/generate", json=gen_body("queued", list(range(30, 90)), max_tokens=5))
        assert queued.status == 200  # headers are out before the first token
        await wait_for(lambda: st.loop.load.waiting == 1, what="the second request waiting for a slot")
        queued.close()  # gone before it ever got a token
        await wait_for(lambda: st.loop.load.waiting == 0 and st.loop.num_live == 1, what="the waiting request dropped")
        text = await (await client.get("/metrics")).text()
        assert 'edgeserve_pod_requests_finished_total{finish_reason="cancelled"} 1.0' in text
        await client.post("/v1/cancel", json={"request_id": "runs"})  # the running one was never disturbed
        recs = await read_stream(running)
        assert recs[-1]["finish_reason"] == "cancelled" and recs[-1]["usage"]["completion_tokens"] > 1


async def test_cancel_endpoint_ends_the_stream_with_cancelled(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        total = (await health(client))["load"]["total_blocks"]
        resp = await client.post("/v1/generate", json=gen_body("to-cancel", list(range(50)), max_tokens=200, ignore_eos=True))
        await resp.content.readline()
        c = await client.post("/v1/cancel", json={"request_id": "to-cancel"})
        assert c.status == 200 and await c.json() == {"request_id": "to-cancel", "cancelled": True}
        protocol.validate("CancelResponse", await c.json())
        recs = await read_stream(resp)
        assert recs[-1]["type"] == "final" and recs[-1]["finish_reason"] == "cancelled"
        assert 1 <= recs[-1]["usage"]["completion_tokens"] < 200
        assert (await health(client))["load"]["free_blocks"] == total
        again = await client.post("/v1/cancel", json={"request_id": "to-cancel"})
        assert await again.json() == {"request_id": "to-cancel", "cancelled": False}


async def test_duplicate_request_id_in_flight_is_refused(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        first = await client.post("/v1/generate", json=gen_body("dup", max_tokens=100, ignore_eos=True))
        await first.content.readline()
        second = await client.post("/v1/generate", json=gen_body("dup", max_tokens=2))
        assert second.status == 409
        err = await second.json()
        protocol.validate("ErrorRecord", err)
        assert err["error"]["param"] == "request_id" and err["request_id"] == "dup"
        await client.post("/v1/cancel", json={"request_id": "dup"})
        assert (await read_stream(first))[-1]["finish_reason"] == "cancelled"


async def test_request_id_reused_right_after_cancel_streams_and_leaves_nothing_running(tiny):
    """Cancel R and submit a new R while the engine thread is busy, so both commands run in one
    batch: the engine's late "cancelled" output for the old R must not end the new R (it used to,
    leaving the new sequence running in the engine with nobody to read it)."""
    async with pod(real_engine_factory(tiny)) as (client, st):
        old = await client.post("/v1/generate", json=gen_body("R", list(range(3, 40)), max_tokens=200, ignore_eos=True))
        await old.content.readline()  # the old R is streaming
        gate = threading.Event()
        busy = asyncio.ensure_future(st.loop.call(lambda e: gate.wait(10)))  # hold the engine thread
        await wait_for(lambda: st.loop._cmds.qsize() == 0, what="engine thread holding")
        cancel = asyncio.ensure_future(client.post("/v1/cancel", json={"request_id": "R"}))
        await wait_for(lambda: st.loop._cmds.qsize() == 1, what="cancel queued")
        new = asyncio.ensure_future(client.post("/v1/generate", json=gen_body("R", [5, 6, 7], max_tokens=20, ignore_eos=True)))
        await wait_for(lambda: st.loop._cmds.qsize() == 2, what="new R queued")
        gate.set()
        await busy
        assert await (await cancel).json() == {"request_id": "R", "cancelled": True}
        assert (await read_stream(old))[-1]["finish_reason"] == "cancelled"
        recs = await read_stream(await new)
        assert recs[-1]["type"] == "final" and recs[-1]["finish_reason"] == "length", recs[-1]
        assert len(tokens_of(recs)) == 20
        assert await st.loop.call(lambda e: list(e._seqs)) == [] and st.loop.num_live == 0
        again = await read_stream(await client.post("/v1/generate", json=gen_body("R", [5, 6], max_tokens=2)))
        assert again[-1]["type"] == "final" and len(tokens_of(again)) == 2


async def test_unknown_model_and_prompt_too_long(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        r = await client.post("/v1/generate", json={**gen_body("m"), "model": "llama-9000"})
        assert r.status == 404
        err = await r.json()
        protocol.validate("ErrorRecord", err)
        assert err["error"]["code"] == "unknown_model" and err["error"]["param"] == "model"
        r = await client.post("/v1/generate", json=gen_body("long", [1] * 256))  # max_model_len 256
        err = await r.json()
        assert r.status == 400 and err["error"]["code"] == "prompt_too_long" and err["error"]["param"] == "prompt_token_ids"
        r = await client.post("/v1/generate", json=gen_body("fits", [1] * 255, max_tokens=5))
        recs = await read_stream(r)
        assert recs[-1]["finish_reason"] == "length" and recs[-1]["usage"]["completion_tokens"] == 1
        # a token the model does not have: the engine's ValueError, answered as invalid_request
        r = await client.post("/v1/generate", json=gen_body("vocab", [1, 300]))
        err = await r.json()
        assert r.status == 400 and err["error"]["code"] == "invalid_request" and "300" in err["error"]["message"]


async def test_prompt_bigger_than_the_kv_cache_is_prompt_too_long(tiny):
    async with pod(real_engine_factory(tiny, kv_cache_blocks=4, max_model_len=1024)) as (client, st):
        r = await client.post("/v1/generate", json=gen_body("big", [1] * 100))  # 4 blocks hold 64 tokens
        err = await r.json()
        assert r.status == 400 and err["error"]["code"] == "prompt_too_long"


async def test_prefix_cache_hit_is_reported_and_kv_events_match_block_hashes(tiny):
    prompt = list(range(30, 30 + 3 * BLOCK + 5))  # three full blocks and a tail
    async with pod(real_engine_factory(tiny)) as (client, st):
        first = await read_stream(await client.post("/v1/generate", json=gen_body("p-1", prompt, 4, ignore_eos=True)))
        second = await read_stream(await client.post("/v1/generate", json=gen_body("p-2", prompt, 4, ignore_eos=True)))
        assert tokens_of(first) == tokens_of(second)
        assert first[-1]["usage"]["cached_tokens"] == 0
        assert second[-1]["usage"]["cached_tokens"] >= 3 * BLOCK - BLOCK  # at least the first blocks came from cache
        async def batches_with_prompt_blocks():
            batches = (await (await client.get("/v1/kv_events", params={"after": "0"})).json())["batches"]
            stored = [h for b in batches for e in b["events"] if e["type"] == "stored" for h in e["block_hashes"]]
            return batches if len(stored) >= 3 else None

        batches = await wait_for(batches_with_prompt_blocks, what="KV event batches cut")
        first = batches[0]["seq"]
        assert [b["seq"] for b in batches] == list(range(first, first + len(batches)))
        assert first > 1_700_000_000_000  # counted from the start time in ms, so a restart never goes back
        assert batches[0]["events"][0] == {"type": "cleared", "block_hashes": []}  # a fresh pod's cache is empty
        stored = []
        for b in batches:
            protocol.validate("KvEventBatch", b)
            assert b["pod_id"] == "pod-test" and b["model"] == MODEL_ID and b["block_size"] == BLOCK
            stored += [h for e in b["events"] if e["type"] == "stored" for h in e["block_hashes"]]
        assert block_hashes(MODEL_ID, prompt, BLOCK) == stored[:3]
        last = batches[-1]["seq"]
        assert (await (await client.get("/v1/kv_events", params={"after": str(last)})).json()) == {"batches": []}
        h = await health(client)
        assert h["kv_events_seq"] == last
        text = await (await client.get("/metrics")).text()
        assert "edgeserve_pod_prefix_cache_hit_rate" in text and "edgeserve_pod_prefix_cache_hit_rate 0.0" not in text


async def test_health_is_503_while_starting_then_ok(tiny):
    gate = threading.Event()
    build = real_engine_factory(tiny)

    def slow_start():
        gate.wait(30)
        return build()

    async with pod(slow_start, wait=False) as (client, st):
        r = await client.get("/health")
        body = await r.json()
        assert r.status == 503 and body["status"] == "starting"
        protocol.validate("Health", body)
        g = await client.post("/v1/generate", json=gen_body("early"))
        assert g.status == 503 and (await g.json())["error"]["code"] == "overloaded"
        gate.set()
        await st.loop.wait_ready(timeout=60)
        r = await client.get("/health")
        body = await r.json()
        protocol.validate("Health", body)
        assert r.status == 200 and body["status"] == "ok" and body["models"] == [MODEL_ID]
        assert body["block_size"] == BLOCK and body["max_model_len"] == 256 and body["role"] == "both"
        assert body["load"]["total_blocks"] == 64 and body["load"]["free_blocks"] == 64


async def test_metrics_after_traffic(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        for i in range(3):
            await read_stream(await client.post("/v1/generate", json=gen_body(f"m-{i}", max_tokens=5, ignore_eos=True)))
        await client.post("/v1/generate", data=b"{", headers={"Content-Type": "application/json"})
        r = await client.get("/metrics")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    for line in ("edgeserve_pod_time_to_first_token_seconds_count 3.0",
                 "edgeserve_pod_time_per_output_token_seconds_count 3.0",
                 "edgeserve_pod_request_duration_seconds_count 3.0",
                 'edgeserve_pod_requests_finished_total{finish_reason="length"} 3.0',
                 "edgeserve_pod_generation_tokens_total 15.0",
                 "edgeserve_pod_prompt_tokens_total 15.0",
                 'edgeserve_pod_request_errors_total{code="invalid_request"} 1.0',
                 "edgeserve_pod_requests_running 0.0", "edgeserve_pod_requests_waiting 0.0",
                 "edgeserve_pod_kv_total_blocks 64.0"):
        assert line in text, line
    assert "edgeserve_pod_kv_cache_usage_ratio" in text and "edgeserve_pod_decode_tokens_per_second" in text
