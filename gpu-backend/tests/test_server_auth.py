"""The pod secret on the pod's endpoints (server/auth.py), on the real engine (tiny random Llama
on CPU): without it or with a wrong one, generate / cancel / slo_update / kv_events answer 401
`unauthorized` before reading the body and touch nothing; with it they work; /health and
/metrics stay open; a pod without a secret answers anyone and warns once at start."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from edgeserve_pod import protocol
from _server_util import (gen_body, health, pod, read_stream, real_engine_factory, send_as, tokens_of, wait_for,
                          write_tiny)

SECRET = "auth-test-pod-secret"
BAD = [
    {},
    {"Authorization": "Bearer wrong-secret"},
    {"Authorization": f"Bearer {SECRET}x"},
    {"Authorization": f"Bearer {SECRET[:-1]}"},
    {"Authorization": f"Basic {SECRET}"},
    {"Authorization": SECRET},
    {"Authorization": "Bearer"},
]
# (method, path, JSON body): each a request that a pod answers 200 when it is authorized
CALLS = [
    ("POST", "/v1/generate", gen_body("auth-g", max_tokens=2)),
    ("POST", "/v1/cancel", {"request_id": "auth-c"}),
    ("POST", "/v1/slo_update", {"request_id": "auth-s", "expected_output_tokens": 9}),
    ("GET", "/v1/kv_events?after=0", None),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def errors_counted(metrics_text: str, code: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f'edgeserve_pod_request_errors_total{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_each_endpoint_refuses_a_missing_or_wrong_secret(tiny):
    async with pod(real_engine_factory(tiny), pod_secret=SECRET) as (client, st):
        for method, path, body in CALLS:
            for headers in BAD:
                status, rec, resp_headers = await send_as(client, method, path, headers, json=body)
                assert status == 401, (path, headers, rec)
                protocol.validate("ErrorRecord", rec)
                assert rec["error"]["code"] == "unauthorized" and path.split("?")[0] in rec["error"]["message"]
                assert resp_headers.get("WWW-Authenticate") == "Bearer"
        # nothing reached the engine: no request ran, the same id is free
        assert (await health(client))["load"]["running"] == 0
        assert errors_counted(await (await client.get("/metrics")).text(), "unauthorized") == len(CALLS) * len(BAD)
        # the scheme is case-insensitive; the token is not
        status, rec, _ = await send_as(client, "POST", "/v1/cancel", {"Authorization": f"bearer {SECRET}"},
                                       json={"request_id": "auth-c"})
        assert status == 200 and rec == {"request_id": "auth-c", "cancelled": False}
        status, _, _ = await send_as(client, "POST", "/v1/cancel", {"Authorization": f"Bearer {SECRET.upper()}"},
                                     json={"request_id": "auth-c"})
        assert status == 401


async def test_with_the_secret_every_endpoint_works(tiny):
    async with pod(real_engine_factory(tiny), pod_secret=SECRET) as (client, st):
        auth = {"Authorization": f"Bearer {SECRET}"}
        recs = await read_stream(await client.post("/v1/generate", json=CALLS[0][2], headers=auth))
        assert recs[-1]["type"] == "final" and recs[-1]["usage"]["completion_tokens"] == 2
        for method, path, body in CALLS[1:]:
            status, rec, _ = await send_as(client, method, path, auth, json=body)
            assert status == 200, (path, rec)
        await wait_for(lambda: st.kv_log.since(0), what="a KV event batch")
        status, rec, _ = await send_as(client, "GET", "/v1/kv_events?after=0", auth)
        assert status == 200 and rec["batches"]
        for b in rec["batches"]:
            protocol.validate("KvEventBatch", b)


async def test_health_and_metrics_stay_open(tiny):
    async with pod(real_engine_factory(tiny), pod_secret=SECRET) as (client, st):
        status, h, _ = await send_as(client, "GET", "/health")
        assert status == 200 and h["status"] == "ok"
        protocol.validate("Health", h)
        async with aiohttp.ClientSession() as s, s.get(client.make_url("/metrics")) as r:
            assert r.status == 200 and "edgeserve_pod_requests_running" in await r.text()


async def test_a_wrong_secret_cannot_cancel_or_steer_a_running_request(tiny):
    async with pod(real_engine_factory(tiny), pod_secret=SECRET) as (client, st):
        resp = await client.post("/v1/generate", json=gen_body("victim", list(range(20)), max_tokens=120, ignore_eos=True))
        assert resp.status == 200
        await resp.content.readline()  # it runs
        for headers in ({}, {"Authorization": "Bearer guess"}):
            status, _, _ = await send_as(client, "POST", "/v1/cancel", headers, json={"request_id": "victim"})
            assert status == 401
            status, _, _ = await send_as(client, "POST", "/v1/slo_update", headers,
                                         json={"request_id": "victim", "priority": 0})
            assert status == 401
        assert (await health(client))["load"]["running"] == 1, "the request still runs after the refused cancels"
        recs = await read_stream(resp)
        assert recs[-1]["finish_reason"] == "length" and recs[-1]["usage"]["completion_tokens"] == 120


async def test_the_body_is_not_read_before_the_secret_is_checked(tiny):
    async with pod(real_engine_factory(tiny), pod_secret=SECRET, max_body_bytes=1024) as (client, st):
        status, rec, _ = await send_as(client, "POST", "/v1/generate", {}, json=gen_body("big", list(range(3, 250)) * 4))
        assert status == 401 and rec["error"]["code"] == "unauthorized"  # not 413
        big = await client.post("/v1/generate", json=gen_body("big", list(range(3, 250)) * 4))
        assert big.status == 413


async def test_without_a_secret_nothing_changes_and_the_pod_warns_once(tiny, caplog):
    caplog.set_level(logging.WARNING, logger="edgeserve_pod.server")
    async with pod(real_engine_factory(tiny)) as (client, st):
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("open", max_tokens=3, ignore_eos=True)))
        assert len(tokens_of(recs)) == 3
        for method, path, body in CALLS[1:]:
            status, rec, _ = await send_as(client, method, path, {}, json=body)
            assert status == 200, (path, rec)
        status, _, _ = await send_as(client, "PUT", "/v1/kv_transfer/t-0", {}, data=b"\x05\x00\x00\x00{oops")
        assert status == 400  # taken, and refused for its content, not for a credential
    warnings = [r for r in caplog.records if "no pod secret" in r.getMessage()]
    assert len(warnings) == 1 and "unauthenticated" in warnings[0].getMessage()
    caplog.clear()
    async with pod(real_engine_factory(tiny), pod_secret=SECRET):
        pass
    assert not [r for r in caplog.records if "no pod secret" in r.getMessage()]
