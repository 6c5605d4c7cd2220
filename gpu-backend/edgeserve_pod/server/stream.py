"""RequestStream: the asyncio end of one request, fed by the engine thread.

Items (pushed with loop.call_soon_threadsafe, so `push` always runs on the event loop):
    ("tokens", token_ids: list[int], t_ms: list[float])
    ("final", FinalRecord dict)
    ("error", code: str, message: str)
`records()` turns them into protocol StreamRecords, merging token items that queued up while
the client was being written to (fewer, larger NDJSON lines under load; t_ms stays per token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from edgeserve_pod.protocol import error_record


class RequestStream:
    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop):
        self.request_id = request_id
        self._loop = loop
        self._items: asyncio.Queue = asyncio.Queue()
        self.done = False  # a final or error record has been handed out

    def push(self, item: tuple) -> None:
        self._items.put_nowait(item)

    async def records(self) -> AsyncIterator[dict]:
        while not self.done:
            item = await self._items.get()
            if item[0] == "tokens":
                ids, t_ms = list(item[1]), list(item[2])
                ending = None
                while not self._items.empty():
                    nxt = self._items.get_nowait()
                    if nxt[0] != "tokens":
                        ending = nxt
                        break
                    ids += nxt[1]
                    t_ms += nxt[2]
                yield {"type": "tokens", "request_id": self.request_id, "token_ids": ids, "t_ms": t_ms}
                if ending is None:
                    continue
                item = ending
            self.done = True
            if item[0] == "final":
                yield item[1]
            else:
                yield error_record(item[1], item[2], None, self.request_id)
