"""The load's decode/prefill rates are per second of engine work: idle time after a burst does not
make the pod look slower to the router (workers/src/routing/cost.ts takes them as capacity)."""

from __future__ import annotations

import asyncio
import time

import pytest

from _server_util import gen_body, health, pod, read_stream, real_engine_factory, write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


async def test_rates_count_busy_time_only(tiny):
    async with pod(real_engine_factory(tiny)) as (client, st):
        await read_stream(await client.post("/v1/generate", json=gen_body("a", list(range(3, 200)), 24, ignore_eos=True)))
        busy = (await health(client))["load"]
        assert busy["prefill_tok_s"] > 0 and busy["decode_tok_s"] > 0
        await asyncio.sleep(1.5)  # idle: the engine thread wakes and refreshes the load meanwhile
        await st.loop.call(lambda eng: None)
        idle = (await health(client))["load"]
        assert idle["prefill_tok_s"] == pytest.approx(busy["prefill_tok_s"], rel=1e-6)
        assert idle["decode_tok_s"] == pytest.approx(busy["decode_tok_s"], rel=1e-6)


async def test_decode_step_ms_is_the_mean_step_that_produced_tokens(tiny):
    """decode_step_ms is what a decoding request waits per token: the mean of the recent steps that
    produced tokens. Steps are slowed by a known 15 ms here, so the figure cannot be a rate in disguise."""
    from edgeserve_pod import protocol

    async with pod(real_engine_factory(tiny)) as (client, st):
        steps: list[tuple[float, bool]] = []

        def slow_steps(eng):
            inner = eng.step

            def step():
                t = time.monotonic()
                outs = inner()
                time.sleep(0.015)
                steps.append((time.monotonic() - t, any(o.new_token_ids for o in outs)))
                return outs

            eng.step = step

        await st.loop.call(slow_steps)
        await read_stream(await client.post("/v1/generate", json=gen_body("a", list(range(3, 60)), 12, ignore_eos=True)))
        body = await health(client)
        protocol.validate("Health", body)
        token_steps = [d for d, produced in steps if produced]
        assert len(token_steps) >= 12
        mean_ms = 1000.0 * sum(token_steps) / len(token_steps)
        assert body["load"]["decode_step_ms"] >= 15.0
        assert body["load"]["decode_step_ms"] == pytest.approx(mean_ms, rel=0.1, abs=1.0)
