"""The pod secret on the pod's own endpoints.

The edge and the pods of one deployment share one secret (the edge's POD_SECRET; the pod's
--pod-secret / $EDGESERVE_POD_SECRET). Pods show it to the edge on /internal/*, and the edge
shows it to pods: a pod with a secret answers the endpoints that run, cancel or steer work, or
show which prefixes it holds (`PROTECTED`), and the pod-to-pod KV PUT, only with
`Authorization: Bearer <secret>`; anything else is a 401 ErrorRecord `unauthorized`, answered
before the body is read. /health and /metrics stay open: load balancers and Prometheus scrape
them without credentials (they carry load figures and counters, no request ids or tokens).
"""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from edgeserve_pod.protocol import error_record

log = logging.getLogger("edgeserve_pod.server")

PROTECTED = frozenset({"/v1/generate", "/v1/cancel", "/v1/slo_update", "/v1/kv_events"})


def bearer_ok(header: str | None, secret: str) -> bool:
    """True when `header` is `Bearer <secret>` (scheme case-insensitive, constant-time compare)."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())


def unauthorized(what: str, request_id: str | None = None) -> web.Response:
    """The 401 every endpoint answers for a missing or wrong secret (ErrorRecord `unauthorized`)."""
    rec = error_record("unauthorized", f"{what} needs 'Authorization: Bearer <pod secret>' (the edge's POD_SECRET)",
                       None, request_id)
    return web.Response(body=json.dumps(rec, separators=(",", ":")).encode(), status=401,
                        content_type="application/json", headers={"WWW-Authenticate": "Bearer"})


def middleware(secret: str, on_refusal=None):
    """aiohttp middleware: requests to PROTECTED paths need the secret; `on_refusal()` is called
    for each one refused (metrics)."""

    @web.middleware
    async def require_pod_secret(request: web.Request, handler):
        if request.path in PROTECTED and not bearer_ok(request.headers.get("Authorization"), secret):
            if on_refusal is not None:
                on_refusal()
            return unauthorized(f"{request.method} {request.path}")
        return await handler(request)

    return require_pod_secret


def warn_if_open(secret: str | None, host: str) -> None:
    """One warning at start when the pod has no secret: anyone who reaches it can use it."""
    if not secret:
        log.warning("no pod secret (--pod-secret / $EDGESERVE_POD_SECRET): /v1/generate, /v1/cancel, /v1/slo_update, "
                    "/v1/kv_events and PUT /v1/kv_transfer are unauthenticated; anyone who can reach %s may use them",
                    host)
