"""aiohttp routes of the pod protocol (shared/spec/pod-protocol.md).

    POST /v1/generate       GenerateRequest -> NDJSON StreamRecords
    POST /v1/cancel         CancelRequest -> CancelResponse
    POST /v1/slo_update     SloUpdate -> SloUpdateResponse (refined targets of a request in flight)
    GET  /health            Health (503 while starting or draining)
    GET  /v1/kv_events      ?after=SEQ -> {"batches": [KvEventBatch...]}
    GET  /metrics           Prometheus text

With a pod secret (ServerConfig.pod_secret), generate, cancel, slo_update, kv_events and the KV
PUT need `Authorization: Bearer <secret>` (401 `unauthorized` otherwise; server/auth.py); /health
and /metrics stay open. Without one, the pod warns once at start and answers anyone.

Every refusal is one ErrorRecord as JSON with a 4xx/5xx status, and nothing is queued. Once a
generate stream has started, failures end it with an ErrorRecord line. A client that goes away
cancels its request (aiohttp cancels the handler; `finally` aborts the request in the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, Callable

from aiohttp import web

from edgeserve_pod.kv_transfer import serve as kvt
from edgeserve_pod.protocol import ProtocolError, error_record, parse_json_body, validate
from edgeserve_pod.server import auth
from edgeserve_pod.server.config import ServerConfig
from edgeserve_pod.server.edge_client import EdgeClient
from edgeserve_pod.server.engine_loop import EngineLoop, Submission
from edgeserve_pod.server.kv_log import KvEventLog
from edgeserve_pod.server.metrics import PodMetrics
from edgeserve_pod.server.stream import RequestStream

log = logging.getLogger("edgeserve_pod.server")

STATE = web.AppKey("edgeserve_pod_state", "PodState")


class PodState:
    """What the handlers share: config, engine loop, KV-event log, metrics, edge client."""

    def __init__(self, cfg: ServerConfig, engine_factory: Callable[[], Any], model_id: str, block_size: int,
                 sampling_params_cls: type | None = None):
        self.cfg = cfg
        self.model_id = model_id  # known before the engine is built, for /health while starting
        self.metrics = PodMetrics()
        self.kv_log = KvEventLog(cfg.pod_id, model_id, block_size, keep=cfg.kv_log_keep)
        self.loop = EngineLoop(engine_factory, self.metrics, self.kv_log, max_waiting=cfg.max_waiting)
        self.edge = EdgeClient(cfg, self.registration, self.kv_log) if cfg.edge_url else None
        self.draining = False
        self._sampling_params_cls = sampling_params_cls
        self._tasks: list[asyncio.Task] = []

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        return "ok" if self.loop.ready else "starting"

    @property
    def block_size(self) -> int:
        return self.loop.info.block_size if self.loop.info else self.kv_log.block_size

    def health(self) -> dict:
        h = {"pod_id": self.cfg.pod_id, "status": self.status, "models": [self.model_id], "role": self.cfg.role,
             "block_size": self.block_size, "kv_events_seq": self.kv_log.last_seq, "load": self.loop.load.pod_load()}
        if self.loop.info:
            h["max_model_len"] = self.loop.info.max_model_len
        return h

    def registration(self) -> dict:
        r = {"pod_id": self.cfg.pod_id, "url": self.cfg.url, "models": [self.model_id], "role": self.cfg.role,
             "block_size": self.block_size, "load": self.loop.load.pod_load()}
        if self.loop.info:
            r["max_model_len"] = self.loop.info.max_model_len
        return r

    def sampling_params(self, **kw: Any) -> Any:
        if self._sampling_params_cls is None:
            from edgeserve_pod.engine.sequence import SamplingParams

            self._sampling_params_cls = SamplingParams
        return self._sampling_params_cls(**kw)

    async def start(self) -> None:
        self.loop.start()
        self._tasks.append(asyncio.create_task(self._after_ready()))

    async def _after_ready(self) -> None:
        try:
            await self.loop.wait_ready()
        except Exception as e:  # noqa: BLE001 - /health reports it; the CLI exits on it
            log.error("engine failed to start: %s", e)
            return
        log.info("engine ready: model %s, block size %d, max_model_len %d", self.loop.info.model_id,
                 self.loop.info.block_size, self.loop.info.max_model_len)
        if self.edge is not None:
            self._tasks.append(asyncio.create_task(self.edge.run_heartbeats()))
            self._tasks.append(asyncio.create_task(self.edge.run_kv_push()))
        else:
            self._tasks.append(asyncio.create_task(self._cut_kv_events()))

    async def _cut_kv_events(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.kv_cut_interval_s)
            self.kv_log.cut()

    async def stop(self) -> None:
        self.draining = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self.edge is not None:
            await self.edge.close()
        await self.loop.stop()


# ---- helpers -------------------------------------------------------------------------------

def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


def _refuse(e: ProtocolError, metrics: PodMetrics) -> web.Response:
    metrics.observe_error(e.code)
    return _json(e.record(), e.status)


async def _read_message(request: web.Request, def_name: str) -> dict:
    if request.content_type != "application/json":
        raise ProtocolError(f"Content-Type must be application/json, got {request.content_type!r}", status=415)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(f"body is larger than {request.app[STATE].cfg.max_body_bytes} bytes", status=413) from None
    message = parse_json_body(raw)
    validate(def_name, message)
    return message


def _int(x: Any) -> int:
    return int(x)  # the schema accepts 3.0 as an integer; the engine wants int


# ---- handlers ------------------------------------------------------------------------------

async def generate(request: web.Request) -> web.StreamResponse:
    t_recv = time.monotonic()
    st = request.app[STATE]
    kv_ms = None
    try:
        body = await _read_message(request, "GenerateRequest")
        if "kv_transfer" in body:  # disaggregated prefill/decode: kv_transfer/serve.py
            kvt.check_directive(body["kv_transfer"], body["request_id"])
            if body["kv_transfer"]["role"] == "send":
                record = await kvt.send_role(st, body, t_recv, _submission)
                return web.Response(body=json.dumps(record).encode() + b"\n", content_type="application/x-ndjson")
            # receive: refuse a bad request before waiting (up to a minute) for its KV
            sub = _submission(st, {k: v for k, v in body.items() if k != "kv_transfer"}, t_recv)
            kv_ms = await kvt.receive_role(request.app, st, body)
        else:
            sub = _submission(st, body, t_recv)
    except ProtocolError as e:
        return _refuse(e, st.metrics)
    stream = RequestStream(sub.request_id, asyncio.get_running_loop())
    try:
        await st.loop.submit(sub, stream)
    except ProtocolError as e:
        return _refuse(e, st.metrics)
    except asyncio.CancelledError:
        st.loop.abort_nowait(sub.request_id, stream)
        raise

    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    try:
        await resp.prepare(request)
        async for record in stream.records():
            if kv_ms is not None and record["type"] == "final":
                record.setdefault("timing", {})["kv_transfer_ms"] = kv_ms
            await resp.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        log.info("client of %s went away; cancelling", sub.request_id)
        raise
    finally:
        if not stream.done:
            st.loop.abort_nowait(sub.request_id, stream)
    return resp


def _submission(st: PodState, body: dict, t_recv: float) -> Submission:
    rid = body["request_id"]
    if st.draining:
        raise ProtocolError("pod is draining", code="overloaded", status=503, request_id=rid)
    if not st.loop.ready:
        raise ProtocolError("pod is starting", code="overloaded", status=503, request_id=rid)
    info = st.loop.info
    if body["model"] != info.model_id:
        raise ProtocolError(f"this pod serves {info.model_id!r}, not {body['model']!r}", param="model",
                            code="unknown_model", status=404, request_id=rid)
    prompt = [_int(t) for t in body["prompt_token_ids"]]
    if len(prompt) >= info.max_model_len:
        raise ProtocolError(f"prompt has {len(prompt)} tokens; this pod's max_model_len is {info.max_model_len} "
                            "(prompt plus at least one output token)", param="prompt_token_ids",
                            code="prompt_too_long", status=400, request_id=rid)
    sampling = body.get("sampling", {})
    seed = sampling.get("seed")
    top_k = _int(sampling.get("top_k", 0))
    if info.vocab_size and top_k >= info.vocab_size:
        top_k = 0  # keeps every token either way (vLLM does the same); 0 skips the top-k sort
    try:
        params = st.sampling_params(
            max_tokens=_int(body["max_tokens"]),
            temperature=float(sampling.get("temperature", 0.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            top_k=top_k,
            seed=None if seed is None else _int(seed),
            stop_token_ids=[_int(t) for t in body.get("stop_token_ids", [])],
            ignore_eos=bool(body.get("ignore_eos", False)),
        )
    except ValueError as e:
        raise ProtocolError(str(e), param="sampling", request_id=rid) from None
    attention = body.get("attention")
    if attention is not None:  # ints as ints (the schema's 2048.0); the engine's backend checks the rest
        attention = {k: v if k == "sparse" else _int(v) for k, v in attention.items()}
    return Submission(request_id=rid, prompt_token_ids=prompt, params=params, t_recv=t_recv,
                      slo=body.get("slo"), attention=attention)


async def cancel(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        body = await _read_message(request, "CancelRequest")
        cancelled = await st.loop.abort(body["request_id"]) if st.loop.ready else False
    except ProtocolError as e:
        return _refuse(e, st.metrics)
    return _json({"request_id": body["request_id"], "cancelled": cancelled})


async def slo_update(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        body = await _read_message(request, "SloUpdate")
        rid = body.pop("request_id")
        changes = {k: (_int(v) if k != "deadline_ms" else float(v)) for k, v in body.items()}
        updated = await st.loop.update_slo(rid, changes) if st.loop.ready else False
    except ProtocolError as e:
        return _refuse(e, st.metrics)
    return _json({"request_id": rid, "updated": updated})


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.loop.failed:
        return _json(error_record("internal_error", f"engine failed to start: {st.loop.start_error}"), 503)
    h = st.health()
    return _json(h, 200 if h["status"] == "ok" else 503)


async def kv_events(request: web.Request) -> web.Response:
    st = request.app[STATE]
    raw = request.query.get("after", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return _refuse(ProtocolError(f"after must be a non-negative integer, got {raw[:40]!r}", param="after"), st.metrics)
    return _json({"batches": st.kv_log.since(int(raw))})


async def metrics(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.Response(body=st.metrics.render(), headers={"Content-Type": st.metrics.content_type})


@web.middleware
async def _errors(request: web.Request, handler):
    """Unknown paths, wrong methods and unexpected failures answer an ErrorRecord, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = "invalid_request" if e.status < 500 else "internal_error"
        return _json(error_record(code, f"{request.method} {request.path}: {e.reason}"), e.status)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:  # noqa: BLE001 - a bug; log it, answer 500, keep serving
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _json(error_record("internal_error", f"{type(e).__name__}: {e}"), 500)


def create_app(cfg: ServerConfig, engine_factory: Callable[[], Any], model_id: str, block_size: int,
               sampling_params_cls: type | None = None) -> web.Application:
    """The pod app. The engine is built by `engine_factory` on the engine thread at startup;
    /health answers 503 `starting` until it is ready."""
    st = PodState(cfg, engine_factory, model_id, block_size, sampling_params_cls)
    middlewares = [_errors]
    if cfg.pod_secret:  # inside _errors; before any handler reads a body
        middlewares.append(auth.middleware(cfg.pod_secret, on_refusal=lambda: st.metrics.observe_error("unauthorized")))
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=middlewares)
    app[STATE] = st
    app.router.add_post("/v1/generate", generate)
    app.router.add_post("/v1/cancel", cancel)
    app.router.add_post("/v1/slo_update", slo_update)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/kv_events", kv_events)
    app.router.add_get("/metrics", metrics)
    kvt.install(app, cfg.pod_secret)  # PUT /v1/kv_transfer/{id}

    async def on_startup(_: web.Application) -> None:
        auth.warn_if_open(cfg.pod_secret, cfg.host)
        await st.start()

    async def on_shutdown(_: web.Application) -> None:
        # Before aiohttp waits for handlers: stopping the engine ends open streams with an error
        # record, so shutdown does not sit out its timeout on them.
        await st.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_shutdown)  # idempotent; covers a runner that skips on_shutdown
    return app
