"""The load's decode/prefill rates are per second of engine work: idle time after a burst does not
make the pod look slower to the router (workers/src/routing/cost.ts takes them as capacity)."""

from __future__ import annotations

import asyncio

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
