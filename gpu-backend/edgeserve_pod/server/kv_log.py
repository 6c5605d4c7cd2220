"""KvEventLog: the engine's KV events cut into numbered KvEventBatches for the edge's prefix index.

The engine thread `add`s events as it drains them; batches are `cut` on a timer (and before a
GET /v1/kv_events answer), so one batch covers an interval rather than one engine step. `seq`
starts at 1 and grows by one per batch; the last `keep` batches are kept for readers that poll
with ?after=SEQ. A reader that fell further behind sees a gap in seq, which the protocol defines
as "you missed events".
"""

from __future__ import annotations

import threading
from collections import deque


class KvEventLog:
    def __init__(self, pod_id: str, model_id: str, block_size: int, keep: int = 4096):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.pod_id = pod_id
        self.model_id = model_id
        self.block_size = block_size
        self._lock = threading.Lock()
        self._pending: list[dict] = []
        self._batches: deque[dict] = deque(maxlen=keep)
        self._seq = 0  # seq of the newest batch; 0 = none yet

    @property
    def last_seq(self) -> int:
        return self._seq

    def add(self, events: list[dict]) -> None:
        with self._lock:
            self._pending.extend(events)

    def cut(self) -> dict | None:
        """Turn pending events into the next batch (None if there were none)."""
        with self._lock:
            if not self._pending:
                return None
            self._seq += 1
            batch = {"pod_id": self.pod_id, "model": self.model_id, "seq": self._seq,
                     "block_size": self.block_size, "events": self._pending}
            self._pending = []
            self._batches.append(batch)
            return batch

    def since(self, after: int, limit: int = 1024) -> list[dict]:
        """Kept batches with seq > after, oldest first, at most `limit`."""
        with self._lock:
            if not self._batches or after >= self._seq:
                return []
            first = self._batches[0]["seq"]
            start = max(0, after + 1 - first)
            return [self._batches[i] for i in range(start, min(len(self._batches), start + limit))]
