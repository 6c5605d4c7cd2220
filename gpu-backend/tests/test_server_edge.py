"""The pod's calls to the edge: registration, heartbeats with load, KV-event batches.

The edge side here is a small aiohttp app standing in for the Worker's /internal endpoints: it
checks the bearer secret and validates every body against the shared schema (the contract both
sides are held to); the Worker's own tests check its side of the same schema."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgeserve_pod import protocol
from edgeserve_pod.block_hash import block_hashes
from _server_util import BLOCK, MODEL_ID, gen_body, pod, read_stream, real_engine_factory, wait_for, write_tiny

SECRET = "s3cret-pod-key"


class EdgeStandIn:
    def __init__(self, heartbeat_ms: int = 50):
        self.heartbeat_ms = heartbeat_ms
        self.registrations: list[dict] = []
        self.heartbeats: list[dict] = []
        self.batches: list[dict] = []
        self.problems: list[str] = []
        self.kv_down = False  # answer 503 to KV pushes
        self.forget = False  # answer 404 to the next heartbeat
        app = web.Application()
        app.router.add_post("/internal/pods/register", self.register)
        app.router.add_post("/internal/pods/heartbeat", self.heartbeat)
        app.router.add_post("/internal/kv-events", self.kv)
        self.server = TestServer(app)

    async def _body(self, request, def_name):
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            self.problems.append(f"bad auth on {request.path}")
            raise web.HTTPUnauthorized()
        body = await request.json()
        err = protocol.first_error(def_name, body)
        if err is not None:
            self.problems.append(f"{request.path}: {err.message}")
            raise web.HTTPBadRequest()
        return body

    async def register(self, request):
        self.registrations.append(await self._body(request, "PodRegistration"))
        return web.json_response({"ok": True, "heartbeat_ms": self.heartbeat_ms})

    async def heartbeat(self, request):
        body = await self._body(request, "PodRegistration")
        if self.forget:
            self.forget = False
            return web.json_response({"ok": False}, status=404)
        self.heartbeats.append(body)
        return web.json_response({"ok": True})

    async def kv(self, request):
        body = await self._body(request, "KvEventBatch")
        if self.kv_down:
            return web.json_response({"ok": False}, status=503)
        self.batches.append(body)
        return web.json_response({"ok": True})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


async def test_register_heartbeat_and_push_kv_events(tiny):
    edge = EdgeStandIn()
    await edge.server.start_server()
    try:
        async with pod(real_engine_factory(tiny), edge_url=str(edge.server.make_url("/")), pod_secret=SECRET,
                       advertise_url="http://10.0.0.7:9001", role="decode") as (client, st):
            await wait_for(lambda: len(edge.heartbeats) >= 2, what="registration and two heartbeats")
            reg = edge.registrations[0]
            assert reg["pod_id"] == "pod-test" and reg["url"] == "http://10.0.0.7:9001" and reg["role"] == "decode"
            assert reg["models"] == [MODEL_ID] and reg["block_size"] == BLOCK and reg["max_model_len"] == 256
            assert reg["load"]["total_blocks"] == 64
            assert st.edge.heartbeat_s == pytest.approx(0.05)  # the edge's heartbeat_ms was taken

            prompt = list(range(60, 60 + 2 * BLOCK + 3))
            await read_stream(await client.post("/v1/generate", json=gen_body("kv-1", prompt, 3, ignore_eos=True)))
            def stored():
                return [h for b in edge.batches for e in b["events"] if e["type"] == "stored" for h in e["block_hashes"]]

            await wait_for(lambda: len(stored()) >= 2, what="the prompt's blocks at the edge")
            assert stored()[:2] == block_hashes(MODEL_ID, prompt, BLOCK)

            # the edge refuses KV pushes for a while: batches wait and arrive later, in order, once each
            edge.kv_down = True
            for i in range(3):
                await read_stream(await client.post("/v1/generate", json=gen_body(f"kv-d{i}", [i + 3] * 40, 3, ignore_eos=True)))
            await wait_for(lambda: st.kv_log.last_seq > edge.batches[-1]["seq"], what="batches cut while the edge is down")
            edge.kv_down = False
            await wait_for(lambda: edge.batches[-1]["seq"] == st.kv_log.last_seq, what="backlog delivered")
            seqs = [b["seq"] for b in edge.batches]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert edge.batches[0]["events"][0]["type"] == "cleared"

            # the edge forgot the pod: it registers again
            n = len(edge.registrations)
            edge.forget = True
            await wait_for(lambda: len(edge.registrations) > n, what="re-registration after 404")
            assert not edge.problems, edge.problems
    finally:
        await edge.server.close()


async def test_unreachable_edge_does_not_stop_the_pod(tiny):
    async with pod(real_engine_factory(tiny), edge_url="http://127.0.0.1:9", pod_secret=SECRET,
                   edge_timeout_s=0.5) as (client, st):
        recs = await read_stream(await client.post("/v1/generate", json=gen_body("no-edge", max_tokens=3)))
        assert recs[-1]["type"] == "final"
        assert (await client.get("/health")).status == 200
        assert not st.edge.registered.is_set()
