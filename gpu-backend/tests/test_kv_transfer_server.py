"""Disaggregation through real pod servers over TCP: a prefill pod ships the prompt's KV to a
decode pod (PUT /v1/kv_transfer/{id}); the decode pod's greedy output equals a colocated pod's."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from edgeserve_pod import protocol
from edgeserve_pod.kv_transfer import serve as kvt, wire
from edgeserve_pod.kv_transfer.engine_kv import prompt_hashes
from _server_util import gen_body, pod, read_stream, real_engine_factory, send_as, tokens_of, write_tiny

SECRET = "kv-test-pod-secret"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


async def test_prefill_pod_to_decode_pod_matches_colocated(tiny):
    rng = random.Random(3)
    prompt = [rng.randrange(3, 256) for _ in range(150)]
    # the pods share the deployment's pod secret: the prefill pod shows it on the PUT
    async with pod(real_engine_factory(tiny), pod_id="colo") as (colo, _), \
            pod(real_engine_factory(tiny), pod_id="pre", role="prefill", pod_secret=SECRET) as (pre, _), \
            pod(real_engine_factory(tiny), pod_id="dec", role="decode", pod_secret=SECRET) as (dec, _):
        want = tokens_of(await read_stream(await colo.post("/v1/generate", json=gen_body("c", prompt, 20, ignore_eos=True))))
        peer = str(dec.make_url("")).rstrip("/")
        # decode request first: it waits for the KV, which arrives once the prefill pod is done
        dec_req = asyncio.create_task(dec.post("/v1/generate", json=gen_body(
            "r", prompt, 20, ignore_eos=True, kv_transfer={"role": "receive", "transfer_id": "t-1"})))
        await asyncio.sleep(0.05)
        sent = await read_stream(await pre.post("/v1/generate", json=gen_body(
            "r", prompt, 20, ignore_eos=True, kv_transfer={"role": "send", "transfer_id": "t-1", "peer_url": peer})))
        assert [r["type"] for r in sent] == ["final"]
        assert sent[0]["usage"]["completion_tokens"] == 0
        assert sent[0]["timing"]["kv_transfer_ms"] > 0
        got = await read_stream(await dec_req)
        final = got[-1]
        assert tokens_of(got) == want
        assert final["usage"]["cached_tokens"] == 9 * 16
        assert final["timing"]["kv_transfer_ms"] >= 0
        print(f"\nKV transfer over TCP: send {sent[0]['timing']['kv_transfer_ms']} ms, "
              f"decode-side wait+import {final['timing']['kv_transfer_ms']} ms")


async def test_kv_transfer_refusals(tiny):
    async with pod(real_engine_factory(tiny), pod_id="p") as (client, st):
        r = await client.post("/v1/generate", json=gen_body(kv_transfer={"role": "receive", "transfer_id": "x", "transport": "nccl"}))
        assert r.status == 501
        assert (await r.json())["error"]["code"] == "kv_transfer_failed"
        r = await client.post("/v1/generate", json=gen_body(kv_transfer={"role": "send", "transfer_id": "x"}))
        assert r.status == 400
        # the peer is not listening: the prefill runs, the transfer fails with a clear record
        recs = await read_stream(await client.post("/v1/generate", json=gen_body(
            prompt=list(range(3, 60)), kv_transfer={"role": "send", "transfer_id": "x", "peer_url": "http://127.0.0.1:9"})))
        assert recs[-1]["type"] == "error" and recs[-1]["error"]["code"] == "kv_transfer_failed"
        # a broken KV message is refused, and the pod keeps serving
        r = await client.put("/v1/kv_transfer/y", data=b"\x05\x00\x00\x00{oops")
        assert r.status == 400
        assert "KV" in (await r.json())["error"]["message"]
        assert tokens_of(await read_stream(await client.post("/v1/generate", json=gen_body("ok"))))


async def test_kv_put_needs_the_pod_secret_and_kv_for_the_requests_own_prompt(tiny):
    prompt = [3 + (i * 5) % 250 for i in range(70)]  # 4 lookup blocks
    other = [4 + (i * 5) % 250 for i in range(70)]
    async with pod(real_engine_factory(tiny), pod_id="dec", role="decode", pod_secret=SECRET) as (dec, st):
        shape = await st.loop.call(lambda e: tuple(e.runner.kv.shape))
        hashes = await st.loop.call(lambda e: prompt_hashes(e, other))
        msg = wire.encode(wire.KvPayload(st.loop.info.model_id, st.loop.info.block_size, [h.hex() for h in hashes],
                                         torch.zeros(shape[0], 2, len(hashes), *shape[3:])))
        # no secret, a wrong one, another scheme: 401 before the body is read, nothing delivered
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}):
            status, rec, _ = await send_as(dec, "PUT", "/v1/kv_transfer/t-2", headers, data=msg)
            assert status == 401, headers
            protocol.validate("ErrorRecord", rec)
            assert rec["error"]["code"] == "unauthorized"
        assert not await asyncio.wait_for(dec.app[kvt.INBOX].take("t-2", 0.01), 1)
        # with the secret the PUT is taken; a request for another prompt refuses that KV
        r = await dec.put("/v1/kv_transfer/t-2", data=msg, headers={"Authorization": f"Bearer {SECRET}"})
        assert r.status == 200 and (await r.json())["blocks"] == 4
        r = await dec.post("/v1/generate", json=gen_body("r", prompt, 4, kv_transfer={"role": "receive", "transfer_id": "t-2"}))
        assert r.status == 400
        err = (await r.json())["error"]
        assert err["code"] == "kv_transfer_failed" and "KV block 0 is not block 0 of this request's prompt" in err["message"]
        assert await st.loop.call(lambda e: e.blocks.cache.num_cached_blocks()) == 0
        ok = await read_stream(await dec.post("/v1/generate", json=gen_body("after", prompt, 4, ignore_eos=True)))
        assert ok[-1]["usage"]["cached_tokens"] == 0 and len(tokens_of(ok)) == 4
