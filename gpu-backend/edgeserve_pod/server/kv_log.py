"""KvEventLog: the engine's KV events cut into numbered KvEventBatches for the edge's prefix index.

The engine thread `add`s events as it drains them; batches are `cut` only on a timer
(ServerConfig.kv_cut_interval_s), so one batch covers an interval rather than one engine step. The
first batch's `seq` is `start_seq` + 1 and each later batch's is one more; the last `keep` batches
are kept for readers that poll with ?after=SEQ. A reader that fell further behind sees a gap in
seq, which the protocol defines as "you missed events".

`start_seq` is by default the start time in ms since the epoch (not 0): the edge's
index ignores a pod's batches whose seq is not above the last one it applied, so a restarted pod
must not count from 1 again. A restart therefore shows up at the edge as a gap (old rows demoted),
and the first batch of a run opens with a `cleared` event (the restarted pod's cache is empty).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class KvEventLog:
    def __init__(self, pod_id: str, model_id: str, block_size: int, keep: int = 4096, start_seq: int | None = None):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if start_seq is None:
            start_seq = time.time_ns() // 1_000_000  # one cut per >= 2 ms timer tick: seq grows slower than the clock
        self.pod_id = pod_id
        self.model_id = model_id
        self.block_size = block_size
        self._lock = threading.Lock()
        self._pending: list[dict] = [{"type": "cleared", "block_hashes": []}]
        self._batches: deque[dict] = deque(maxlen=keep)
        self._seq = start_seq  # seq of the newest batch (start_seq: none yet)

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
