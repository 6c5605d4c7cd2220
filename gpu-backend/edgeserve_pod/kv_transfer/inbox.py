"""KvInbox: received KV payloads waiting for their decode request, by transfer id.

The prefill pod may finish before or after the decode request reaches this pod, so either side
can come first: `deliver` keeps a payload for `ttl_s` until someone `take`s it; `take` waits up
to its timeout for a payload to arrive. Bounded: the oldest unclaimed payload goes first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from edgeserve_pod.kv_transfer.wire import KvPayload


class KvInbox:
    def __init__(self, max_items: int = 64, ttl_s: float = 120.0):
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._ready: OrderedDict[str, tuple[float, KvPayload]] = OrderedDict()
        self._waiters: dict[str, asyncio.Future] = {}

    def deliver(self, transfer_id: str, payload: KvPayload) -> None:
        fut = self._waiters.pop(transfer_id, None)
        if fut is not None and not fut.done():
            fut.set_result(payload)
            return
        self._expire()
        self._ready[transfer_id] = (time.monotonic(), payload)
        while len(self._ready) > self.max_items:
            self._ready.popitem(last=False)

    async def take(self, transfer_id: str, timeout_s: float) -> KvPayload | None:
        """The payload for `transfer_id`, or None if none arrived within `timeout_s`."""
        self._expire()
        got = self._ready.pop(transfer_id, None)
        if got is not None:
            return got[1]
        fut = asyncio.get_running_loop().create_future()
        self._waiters[transfer_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            if self._waiters.get(transfer_id) is fut:
                del self._waiters[transfer_id]

    def __len__(self) -> int:
        return len(self._ready)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._ready:
            tid, (t, _) = next(iter(self._ready.items()))
            if now - t < self.ttl_s:
                break
            del self._ready[tid]
