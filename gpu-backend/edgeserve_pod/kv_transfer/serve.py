"""The pod's side of the `kv_transfer` directive (shared/spec/pod-protocol.md), over TCP.

    PUT /v1/kv_transfer/{transfer_id}   body: wire.py message   -> {"ok": true, "blocks": N}

A pod with a pod secret (--pod-secret / $EDGESERVE_POD_SECRET, the one it shows the edge) sends
it on the PUT as `Authorization: Bearer <secret>` and refuses a PUT without it (401 `unauthorized`,
the check of the pod's other endpoints, server/auth.py): the pods of
one deployment share the edge's POD_SECRET. A pod without one (no edge: a dev or bench pod on
loopback) accepts any PUT. The receiver imports only blocks that are a prefix of the waiting
request's own prompt blocks (engine_kv.import_kv).

- role "send" (prefill pod): run the prompt's prefill (max_tokens 1), export the prompt's KV
  blocks, PUT them to `peer_url` + /v1/kv_transfer/{transfer_id}, and answer one `final` record
  (completion_tokens 0, timing.kv_transfer_ms = export + encode + send) or an error record
  `kv_transfer_failed`. The sampled token is not returned: the decode pod produces the output.
- role "receive" (decode pod): wait for the transfer's KV (up to `RECEIVE_TIMEOUT_S`), import it
  into the prefix cache, then serve the request as usual: its prefill computes only the tail.
  If the KV never comes, the pod prefills the prompt itself (same output, slower) and logs it.
  The wait + import time is reported as timing.kv_transfer_ms in the final record.
Transport "cuda_ipc" (pods in processes of one host sharing a GPU, cuda_ipc.py): the same PUT
carries a CUDA IPC handle instead of the bytes (Content-Type cuda_ipc.CONTENT_TYPE); the receiver
copies the blocks device to device before it answers. A pod without CUDA answers 501 to it.
NCCL is not implemented: a directive asking for it gets a 501.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Callable

import aiohttp
from aiohttp import web

from edgeserve_pod.kv_transfer import cuda_ipc, wire
from edgeserve_pod.kv_transfer.engine_kv import export_kv, import_kv
from edgeserve_pod.kv_transfer.inbox import KvInbox
from edgeserve_pod.protocol import ProtocolError, error_record
from edgeserve_pod.server import auth

log = logging.getLogger("edgeserve_pod.kv_transfer")

INBOX = web.AppKey("edgeserve_kv_inbox", KvInbox)
SECRET = web.AppKey("edgeserve_kv_secret", str)
RECEIVE_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 60.0
MAX_KV_BYTES = 2 << 30


def install(app: web.Application, secret: str | None = None) -> None:
    """Adds the inbox and the PUT route to a pod app (before it starts); with `secret`, a PUT
    must carry it as a Bearer token."""
    app[INBOX] = KvInbox()
    if secret:
        app[SECRET] = secret
    app.router.add_put("/v1/kv_transfer/{transfer_id}", receive_kv)


def inbox(app: web.Application) -> KvInbox:
    return app[INBOX]


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


async def receive_kv(request: web.Request) -> web.Response:
    """PUT /v1/kv_transfer/{transfer_id}: store a payload for the decode request that will take it."""
    tid = request.match_info["transfer_id"]
    secret = request.app.get(SECRET)
    if secret is not None and not auth.bearer_ok(request.headers.get("Authorization"), secret):
        return auth.unauthorized("PUT /v1/kv_transfer", tid)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > MAX_KV_BYTES:
            return _json(error_record("kv_transfer_failed", f"KV message is larger than {MAX_KV_BYTES} bytes"), 413)
        chunks.append(chunk)
    decode = cuda_ipc.open_shared if request.content_type == cuda_ipc.CONTENT_TYPE else wire.decode
    try:
        payload = await asyncio.get_running_loop().run_in_executor(None, decode, b"".join(chunks))
    except wire.WireError as e:
        return _json(error_record("kv_transfer_failed", str(e), "body", tid), 400)
    inbox(request.app).deliver(tid, payload)
    return _json({"ok": True, "blocks": len(payload.block_hashes)})


def check_directive(kt: dict, rid: str) -> None:
    transport = kt.get("transport", "tcp")
    if transport == "cuda_ipc" and not cuda_ipc.available():
        raise ProtocolError("kv_transfer transport 'cuda_ipc' needs CUDA, and this pod has no CUDA device",
                            param="kv_transfer.transport", code="kv_transfer_failed", status=501, request_id=rid)
    if transport not in ("tcp", "cuda_ipc"):
        raise ProtocolError(f"kv_transfer transport {transport!r} is not implemented on this pod (only 'tcp', 'cuda_ipc')",
                            param="kv_transfer.transport", code="kv_transfer_failed", status=501, request_id=rid)
    if kt["role"] == "send" and not kt.get("peer_url"):
        raise ProtocolError("kv_transfer role 'send' needs peer_url", param="kv_transfer.peer_url",
                            code="kv_transfer_failed", status=400, request_id=rid)


async def send_role(st: Any, body: dict, t_recv: float, make_submission: Callable) -> dict:
    """Prefill here, ship the KV to the peer; returns the one record to answer (final or error)."""
    from edgeserve_pod.server.stream import RequestStream

    kt, rid = body["kv_transfer"], body["request_id"]
    plain = {k: v for k, v in body.items() if k != "kv_transfer"}
    sub = make_submission(st, {**plain, "max_tokens": 1}, t_recv)
    stream = RequestStream(rid, asyncio.get_running_loop())
    await st.loop.submit(sub, stream)
    last: dict | None = None
    try:
        async for rec in stream.records():
            last = rec
    finally:
        if not stream.done:
            st.loop.abort_nowait(rid, stream)
    if last is None or last["type"] != "final":
        return last or error_record("internal_error", "prefill ended without a record", None, rid)
    t0 = time.monotonic()
    prompt = sub.prompt_token_ids
    ipc = kt.get("transport", "tcp") == "cuda_ipc"
    payload = None
    try:
        payload = await st.loop.call(lambda eng: export_kv(eng, prompt, on_device=ipc))
        encode = cuda_ipc.share if ipc else wire.encode
        msg = await asyncio.get_running_loop().run_in_executor(None, encode, payload)
        url = kt["peer_url"].rstrip("/") + "/v1/kv_transfer/" + kt["transfer_id"]
        headers = {"Content-Type": cuda_ipc.CONTENT_TYPE if ipc else "application/octet-stream"}
        if st.cfg.pod_secret:
            headers["Authorization"] = f"Bearer {st.cfg.pod_secret}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)) as http:
            async with http.put(url, data=msg, headers=headers) as resp:
                if resp.status != 200:
                    raise wire.WireError(f"peer answered {resp.status}: {(await resp.text())[:300]}")
        # (CUDA IPC: the peer has copied the blocks; `payload` may be freed from here on.)
    except (wire.WireError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        log.warning("KV transfer %s failed: %s", kt["transfer_id"], e)
        return error_record("kv_transfer_failed", f"KV transfer to {kt['peer_url']} failed: {e}", None, rid)
    kv_ms = round((time.monotonic() - t0) * 1000.0, 3)
    last["usage"]["completion_tokens"] = 0
    last["timing"] = {**last.get("timing", {}), "kv_transfer_ms": kv_ms}
    log.info("KV transfer %s (%s): %d blocks, %d bytes in %.1f ms", kt["transfer_id"], "cuda_ipc" if ipc else "tcp",
             len(payload.block_hashes), payload.nbytes, kv_ms)
    return last


async def receive_role(app: web.Application, st: Any, body: dict) -> float | None:
    """Wait for the transfer's KV and import it; the ms it took, or None when it never came."""
    kt = body["kv_transfer"]
    t0 = time.monotonic()
    payload = await inbox(app).take(kt["transfer_id"], RECEIVE_TIMEOUT_S)
    if payload is None:
        log.warning("KV for transfer %s did not arrive in %.0f s; prefilling here", kt["transfer_id"], RECEIVE_TIMEOUT_S)
        return None
    prompt = [int(t) for t in body["prompt_token_ids"]]
    try:
        await st.loop.call(lambda eng: import_kv(eng, payload, prompt))
    except wire.WireError as e:
        raise ProtocolError(str(e), param="kv_transfer", code="kv_transfer_failed", status=400,
                            request_id=body["request_id"]) from None
    return round((time.monotonic() - t0) * 1000.0, 3)
