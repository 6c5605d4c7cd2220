"""Prefix cache: full KV blocks named by the shared block hashes (shared/spec/block-hash.md).

Public API first: `lookup`, `register`, `forget`, `drain_events`; the eviction order is a small
strategy object (`LRUEviction`) so that another order can be swapped in. The cache holds no
tensors: it maps hashes to block ids of the block manager's pool, so tests need no GPU.
"""

from __future__ import annotations

from collections import OrderedDict


class LRUEviction:
    """Blocks with no reader, oldest first. The block manager adds a sequence's blocks tail
    first when it frees them, so a prompt's tail is evicted before its shared head."""

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def add(self, block_id: int) -> None:
        self._order[block_id] = None
        self._order.move_to_end(block_id)

    def remove(self, block_id: int) -> None:
        self._order.pop(block_id, None)

    def victim(self) -> int | None:
        if not self._order:
            return None
        block_id, _ = self._order.popitem(last=False)
        return block_id

    def __contains__(self, block_id: int) -> bool:
        return block_id in self._order

    def __len__(self) -> int:
        return len(self._order)


class PrefixCache:
    def __init__(self, eviction: LRUEviction | None = None):
        self.eviction = eviction or LRUEviction()
        self._block_of: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        self._root_of: dict[bytes, bytes] = {}  # hash -> first block hash of its chain (the edge's index shard key)
        self._events: list[dict] = []

    def lookup(self, hashes: list[bytes]) -> list[int]:
        """Block ids of the longest prefix of `hashes` that is cached."""
        out: list[int] = []
        for h in hashes:
            b = self._block_of.get(h)
            if b is None:
                break
            out.append(b)
        return out

    def register(self, block_ids: list[int], hashes: list[bytes], parent: bytes | None,
                 root: bytes | None = None) -> None:
        """Name freshly computed full blocks; a hash already held by another block is skipped
        (that block stays unnamed and returns to the free pool when released). `root` is the hash
        of the chain's first block (hashes[0] when parent is None); events carry it as root_hash."""
        if not hashes:
            return
        if root is None:
            root = hashes[0] if parent is None else self._root_of.get(parent, parent)
        stored: list[str] = []
        first_parent = parent
        for b, h in zip(block_ids, hashes):
            if h in self._block_of or b in self._hash_of:
                if stored:
                    self._emit_stored(stored, first_parent, root)
                    stored = []
                first_parent = h
                continue
            self._block_of[h] = b
            self._hash_of[b] = h
            self._root_of[h] = root
            stored.append(h.hex())
        if stored:
            self._emit_stored(stored, first_parent, root)

    def forget(self, block_id: int) -> None:
        """The block is reused for other data: its hash is no longer served."""
        h = self._hash_of.pop(block_id, None)
        if h is not None:
            del self._block_of[h]
            root = self._root_of.pop(h, None)
            ev = {"type": "evicted", "block_hashes": [h.hex()]}
            if root is not None:
                ev["root_hash"] = root.hex()
            self._events.append(ev)

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._hash_of

    def num_cached_blocks(self) -> int:
        return len(self._hash_of)

    def drain_events(self) -> list[dict]:
        """KvEvent dicts (shared/protocol/pod-protocol.schema.json) since the last drain."""
        ev, self._events = self._events, []
        return ev

    def _emit_stored(self, hexes: list[str], parent: bytes | None, root: bytes) -> None:
        self._events.append({"type": "stored", "block_hashes": hexes,
                             "parent_hash": parent.hex() if parent is not None else None, "root_hash": root.hex()})
