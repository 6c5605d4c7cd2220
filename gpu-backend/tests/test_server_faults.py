"""Fault injection: an engine that fails at chosen moments (a fake engine is used only here,
to make the real one fail on demand). The pod must end the affected streams with an ErrorRecord,
answer errors as ErrorRecords, and keep serving."""

from __future__ import annotations

import asyncio

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.engine.outputs import EngineStats, StepOutput
from _server_util import MODEL_ID, gen_body, pod, read_stream, tokens_of


class FlakyEngine:
    """Engine API with scripted failures: echoes prompt[0] + i as token i."""

    model_id, block_size, max_model_len, eos_token_ids = MODEL_ID, 16, 128, [2]

    def __init__(self, fail_step: set[int] = frozenset(), fail_add: Exception | None = None,
                 fail_stats_at: int | None = None, drop_requests: bool = False):
        self.fail_step, self.fail_add, self.fail_stats_at, self.drop = set(fail_step), fail_add, fail_stats_at, drop_requests
        self.steps = self.stats_calls = 0
        self.reqs: dict[str, list] = {}  # id -> [prompt, params, produced]
        self.aborted: list[str] = []

    def add_request(self, rid, prompt, params, slo=None, attention=None):
        if self.fail_add is not None:
            raise self.fail_add
        self.reqs[rid] = [prompt, params, 0]

    def abort_request(self, rid):
        self.aborted.append(rid)
        return self.reqs.pop(rid, None) is not None

    def has_unfinished(self):
        return bool(self.reqs) and not self.drop

    def step(self):
        self.steps += 1
        if self.steps in self.fail_step:
            raise RuntimeError(f"CUDA error: an illegal memory access (injected at step {self.steps})")
        outs = []
        for rid, r in list(self.reqs.items()):
            prompt, params, n = r
            r[2] = n + 1
            done = r[2] >= params.max_tokens
            if done:
                del self.reqs[rid]
            outs.append(StepOutput(rid, [prompt[0] + n], done, "length" if done else None, len(prompt), 0, r[2]))
        return outs

    def stats(self):
        self.stats_calls += 1
        if self.fail_stats_at is not None and self.stats_calls == self.fail_stats_at:
            raise RuntimeError("stats broke (injected)")
        return EngineStats(len(self.reqs), 0, 10, 10, 0.0, 0, 0, 0)

    def drain_kv_events(self):
        return []


def factory(engine):
    return lambda: engine


async def test_engine_failing_mid_stream_ends_that_stream_and_the_pod_goes_on():
    eng = FlakyEngine(fail_step={4})
    async with pod(factory(eng)) as (client, st):
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("f1", [100], max_tokens=10)))
        assert tokens_of(recs) == [100, 101, 102]  # three good steps, then the failure
        err = recs[-1]
        assert err["type"] == "error" and err["request_id"] == "f1" and err["error"]["code"] == "internal_error"
        assert "illegal memory access" in err["error"]["message"]
        assert "f1" in eng.aborted  # the pod told the engine to drop it
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("f2", [50], max_tokens=3)))
        assert tokens_of(recs) == [50, 51, 52] and recs[-1]["type"] == "final"
        text = await (await client.get("/metrics")).text()
        assert 'edgeserve_pod_request_errors_total{code="internal_error"} 1.0' in text
        assert (await client.get("/health")).status == 200


async def test_failure_fails_every_stream_in_flight():
    eng = FlakyEngine(fail_step={3})
    async with pod(factory(eng)) as (client, st):
        gate = asyncio.Event()

        async def one(rid):
            resp = await client.post("/v1/generate", json=gen_body(rid, [10], max_tokens=50))
            await gate.wait()
            return await read_stream(resp)

        tasks = [asyncio.create_task(one(f"m{i}")) for i in range(3)]
        await asyncio.sleep(0.3)
        gate.set()
        results = await asyncio.gather(*tasks)
    assert all(r[-1]["type"] == "error" and r[-1]["error"]["code"] == "internal_error" for r in results)


async def test_non_value_error_from_add_request_is_a_500_error_record():
    async with pod(factory(FlakyEngine(fail_add=RuntimeError("allocator exploded")))) as (client, st):
        r = await client.post("/v1/generate", json=gen_body("a1"))
        rec = await r.json()
        protocol.validate("ErrorRecord", rec)
        assert r.status == 500 and rec["error"]["code"] == "internal_error"
        assert (await client.get("/health")).status == 200


async def test_value_error_from_add_request_is_invalid_request():
    async with pod(factory(FlakyEngine(fail_add=ValueError("top_k too large for this vocabulary")))) as (client, st):
        r = await client.post("/v1/generate", json=gen_body("a2"))
        rec = await r.json()
        assert r.status == 400 and rec["error"]["code"] == "invalid_request" and "top_k" in rec["error"]["message"]


async def test_broken_stats_do_not_kill_the_loop():
    eng = FlakyEngine(fail_stats_at=4)
    async with pod(factory(eng)) as (client, st):
        first = await read_stream(await client.post("/v1/generate", json=gen_body("b1", [7], max_tokens=6)))
        second = await read_stream(await client.post("/v1/generate", json=gen_body("b2", [9], max_tokens=3)))
    assert first[-1]["type"] == "error" and "stats broke" in first[-1]["error"]["message"]
    assert tokens_of(second) == [9, 10, 11] and second[-1]["type"] == "final"


async def test_engine_dropping_a_request_does_not_hang_its_stream():
    eng = FlakyEngine(drop_requests=True)
    async with pod(factory(eng)) as (client, st):
        recs = await asyncio.wait_for(read_stream(await client.post("/v1/generate", json=gen_body("lost"))), 10)
    assert recs == [{"type": "error", "request_id": "lost", "error": {
        "code": "internal_error", "message": "the engine finished without a final output for this request", "param": None}}]


async def test_engine_that_fails_to_start():
    def broken():
        raise FileNotFoundError("model.safetensors missing")

    async with pod(broken, wait=False) as (client, st):
        with pytest.raises(FileNotFoundError):
            await st.loop.wait_ready(timeout=10)
        h = await client.get("/health")
        rec = await h.json()
        assert h.status == 503 and rec["error"]["code"] == "internal_error" and "safetensors" in rec["error"]["message"]
        g = await client.post("/v1/generate", json=gen_body("x"))
        assert g.status == 503 and (await g.json())["error"]["code"] == "overloaded"
        c = await client.post("/v1/cancel", json={"request_id": "x"})
        assert c.status == 200 and (await c.json())["cancelled"] is False


async def test_stopping_the_pod_ends_open_streams_with_an_error_record():
    eng = FlakyEngine()
    eng.step = lambda orig=eng.step: (__import__("time").sleep(0.01), orig())[1]  # slow it down a little
    async with pod(factory(eng)) as (client, st):
        resp = await client.post("/v1/generate", json=gen_body("s1", [1], max_tokens=10_000))
        await resp.content.readline()
        await st.loop.stop()
        recs = await read_stream(resp)
    assert recs[-1]["type"] == "error" and recs[-1]["error"]["code"] == "cancelled"

