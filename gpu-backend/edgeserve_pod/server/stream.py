"""RequestStream: the asyncio end of one request, fed by the engine thread.

Items (delivered with loop.call_soon_threadsafe, so `push` always runs on the event loop):
    ("tokens", token_ids: list[int], t_ms: list[float])
    ("final", FinalRecord dict)
    ("error", code: str, message: str)
`records()` turns them into protocol StreamRecords, merging token items that queued up while
the client was being written to (fewer, larger NDJSON lines under load; t_ms stays per token).
A deque and one waiter future, not an asyncio.Queue: this runs once per token per stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from edgeserve_pod.protocol import error_record


class RequestStream:
    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop):
        self.request_id = request_id
        self._loop = loop
        self._items: deque[tuple] = deque()
        self._waiter: asyncio.Future | None = None
        self.done = False  # a final or error record has been handed out

    def push(self, item: tuple) -> None:
        self._items.append(item)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def records(self) -> AsyncIterator[dict]:
        items = self._items
        while not self.done:
            if not items:
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            ids: list[int] = []
            t_ms: list[float] = []
            ending = None
            while items:
                item = items.popleft()
                if item[0] != "tokens":
                    ending = item
                    break
                ids += item[1]
                t_ms += item[2]
            if ids:
                yield {"type": "tokens", "request_id": self.request_id, "token_ids": ids, "t_ms": t_ms}
            if ending is None:
                continue
            self.done = True
            if ending[0] == "final":
                yield ending[1]
            else:
                yield error_record(ending[1], ending[2], None, self.request_id)
