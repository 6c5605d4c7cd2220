"""POST /v1/slo_update on the real engine (tiny random Llama on CPU): the edge's refined targets reach
the request in flight, and the SLO scheduler's order follows them."""

from __future__ import annotations

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.engine.policy_slo import SloPolicy
from _server_util import gen_body, pod, read_stream, real_engine_factory, write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


async def test_update_reaches_the_running_request_and_its_slack(tiny):
    slo = {"class": "deadline", "deadline_ms": 60_000, "expected_output_tokens": 4}
    async with pod(real_engine_factory(tiny, scheduling_policy="slo")) as (client, st):
        resp = await client.post("/v1/generate", json=gen_body("u-1", list(range(40)), max_tokens=200, ignore_eos=True, slo=slo))
        await resp.content.readline()  # generating

        def slack_and_slo(eng):
            s = eng._seqs["u-1"]
            assert isinstance(eng.scheduler.policy, SloPolicy)
            return eng.scheduler.policy.slack_ms(s), dict(s.slo)

        before, _ = await st.loop.call(slack_and_slo)
        r = await client.post("/v1/slo_update", json={"request_id": "u-1", "expected_output_tokens": 150, "priority": 2})
        assert r.status == 200 and await r.json() == {"request_id": "u-1", "updated": True}
        protocol.validate("SloUpdateResponse", await r.json())
        after, now_slo = await st.loop.call(slack_and_slo)
        assert now_slo == {**slo, "expected_output_tokens": 150, "priority": 2}
        # ~146 more tokens expected at the policy's 50 ms each: the slack fell by several seconds
        assert before - after > 5000
        await client.post("/v1/cancel", json={"request_id": "u-1"})
        await read_stream(resp)
        gone = await client.post("/v1/slo_update", json={"request_id": "u-1", "deadline_ms": 5})
        assert await gone.json() == {"request_id": "u-1", "updated": False}


@pytest.mark.parametrize("body, param", [
    ({"request_id": "x"}, None),  # nothing to update
    ({"request_id": "x", "class": "batch"}, None),
    ({"request_id": "x", "expected_output_tokens": 0}, "expected_output_tokens"),
])
async def test_bad_updates_are_refused(tiny, body, param):
    async with pod(real_engine_factory(tiny)) as (client, st):
        r = await client.post("/v1/slo_update", json=body)
        assert r.status == 400
        rec = await r.json()
        protocol.validate("ErrorRecord", rec)
        assert rec["error"]["code"] == "invalid_request"
        if param:
            assert rec["error"]["param"] == param
