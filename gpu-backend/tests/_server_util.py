"""Helpers shared by the server tests: a tiny random checkpoint, a pod app on it, NDJSON reading."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from edgeserve_pod import protocol
from edgeserve_pod.server.app import STATE, create_app
from edgeserve_pod.server.config import ServerConfig

MODEL_ID = "tiny-test"
BLOCK = 16


def write_tiny(path: str) -> str:
    from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint("tiny", path, seed=0)


def engine_config(model_dir: str, **kw):
    from edgeserve_pod.config import EngineConfig

    defaults = dict(model=model_dir, device="cpu", model_id=MODEL_ID, block_size=BLOCK, kv_cache_blocks=64,
                    max_num_seqs=8, max_num_batched_tokens=128, max_model_len=256)
    return EngineConfig(**{**defaults, **kw})


def real_engine_factory(model_dir: str, **kw):
    def build():
        from edgeserve_pod.engine.engine import LLMEngine

        return LLMEngine(engine_config(model_dir, **kw))

    return build


@asynccontextmanager
async def pod(factory, model_id: str = MODEL_ID, wait: bool = True, **server_kw):
    """A running pod app (TestServer: handler cancellation on, like the CLI) and a client to it.
    With `pod_secret`, the client sends it on every request, as the edge does."""
    cfg = ServerConfig(**{"pod_id": "pod-test", "port": 0, "kv_cut_interval_s": 0.02, **server_kw})
    app = create_app(cfg, factory, model_id, BLOCK)
    headers = {"Authorization": f"Bearer {cfg.pod_secret}"} if cfg.pod_secret else None
    async with TestClient(TestServer(app), headers=headers) as client:
        if wait:
            await app[STATE].loop.wait_ready(timeout=60)
        yield client, app[STATE]


async def send_as(client, method: str, path: str, headers: dict | None = None, **kw) -> tuple[int, dict, dict]:
    """One request to the pod behind `client` with exactly `headers` (none of the client's own, such
    as its pod secret): (status, JSON body, response headers)."""
    async with aiohttp.ClientSession() as s, s.request(method, client.make_url(path), headers=headers or {}, **kw) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


def gen_body(rid: str = "r1", prompt=None, max_tokens: int = 8, **extra) -> dict:
    return {"request_id": rid, "model": MODEL_ID, "prompt_token_ids": prompt or [5, 6, 7, 8, 9],
            "max_tokens": max_tokens, **extra}


async def read_stream(resp) -> list[dict]:
    """All NDJSON records of a generate answer, each checked against the StreamRecord schema."""
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    records = []
    async for line in resp.content:
        if line.strip():
            rec = json.loads(line)
            protocol.validate("StreamRecord", rec)
            records.append(rec)
    return records


def tokens_of(records: list[dict]) -> list[int]:
    return [t for r in records if r["type"] == "tokens" for t in r["token_ids"]]


async def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def health(client) -> dict:
    resp = await client.get("/health")
    body = await resp.json()
    return body
