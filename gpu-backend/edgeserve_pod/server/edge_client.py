"""The pod's calls to the edge (shared/spec/pod-protocol.md, "Edge endpoints the pods call").

Two background tasks once the engine is up:
  * registration, then a heartbeat with the current load every `heartbeat_ms` (the edge's answer
    to registration; ServerConfig.heartbeat_s until then). A heartbeat answered 404 means the edge
    forgot this pod (restart, staleness): register again.
  * KV events: every `kv_cut_interval_s` pending events become a batch; batches not yet accepted
    by the edge are POSTed in seq order. A failed push is retried on the next tick; batches that
    fell out of the log meanwhile show up at the edge as a seq gap.
Failures are logged and retried: the edge being down never takes the pod down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from edgeserve_pod.server.config import ServerConfig
from edgeserve_pod.server.kv_log import KvEventLog

log = logging.getLogger("edgeserve_pod.edge")

_MAX_BACKOFF_S = 10.0


class EdgeError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"edge answered {status}: {text[:200]}")
        self.status = status


class EdgeClient:
    def __init__(self, cfg: ServerConfig, registration: Callable[[], dict], kv_log: KvEventLog):
        assert cfg.edge_url is not None
        self.cfg = cfg
        self.base = cfg.edge_url.rstrip("/")
        self.registration = registration  # builds a PodRegistration from the current state
        self.kv_log = kv_log
        self.heartbeat_s = cfg.heartbeat_s
        self.registered = asyncio.Event()
        self.acked_seq = 0  # newest KV batch the edge accepted
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, path: str, body: dict) -> dict:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.edge_timeout_s),
                headers={"Authorization": f"Bearer {self.cfg.pod_secret}"})
        async with self._session.post(self.base + path, json=body) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise EdgeError(resp.status, text)
            try:
                return await resp.json(content_type=None)
            except ValueError:
                return {}

    async def register(self) -> None:
        answer = await self._post("/internal/pods/register", self.registration())
        ms = answer.get("heartbeat_ms") if isinstance(answer, dict) else None
        if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
            self.heartbeat_s = ms / 1000.0
        self.registered.set()
        log.info("registered with %s as %s (heartbeat every %.1f s)", self.base, self.cfg.pod_id, self.heartbeat_s)

    async def heartbeat(self) -> None:
        try:
            await self._post("/internal/pods/heartbeat", self.registration())
        except EdgeError as e:
            if e.status != 404:
                raise
            log.warning("edge does not know this pod any more; registering again")
            self.registered.clear()
            await self.register()

    async def push_kv(self) -> None:
        """POST every kept batch newer than acked_seq, oldest first; stop at the first failure."""
        for batch in self.kv_log.since(self.acked_seq):
            await self._post("/internal/kv-events", batch)
            self.acked_seq = batch["seq"]

    async def run_heartbeats(self) -> None:
        backoff = 0.5
        while True:
            try:
                if not self.registered.is_set():
                    await self.register()
                else:
                    await self.heartbeat()
                backoff = 0.5
                await asyncio.sleep(self.heartbeat_s)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - logged and retried
                log.warning("edge registration/heartbeat failed: %s", e)
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)

    async def run_kv_push(self) -> None:
        backoff = self.cfg.kv_cut_interval_s
        while True:
            await asyncio.sleep(backoff)
            self.kv_log.cut()
            if not self.registered.is_set():
                continue
            try:
                await self.push_kv()
                backoff = self.cfg.kv_cut_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - logged and retried
                log.warning("KV event push failed (acked seq %d): %s", self.acked_seq, e)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
