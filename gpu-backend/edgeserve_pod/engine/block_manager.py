"""Paged-KV block pool: allocation, reference counts, prefix reuse through the PrefixCache."""

from __future__ import annotations

import weakref
from collections import deque

from edgeserve_pod.block_hash import ROOT, chain_hash
from edgeserve_pod.engine.prefix_cache import PrefixCache
from edgeserve_pod.engine.sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, model_id: str, enable_prefix_caching: bool = True,
                 cache: PrefixCache | None = None):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.model_id = model_id
        self.enable_prefix_caching = enable_prefix_caching
        self.cache = cache or PrefixCache()
        self.ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))  # unnamed blocks with no reader
        self.prefix_hit_tokens = 0
        self.prefix_query_tokens = 0
        # Per sequence: chain hashes of its full blocks, extended as it grows (tokens never change).
        self._chain: weakref.WeakKeyDictionary[Sequence, list[bytes]] = weakref.WeakKeyDictionary()

    # ---- public API ----
    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: free ones plus cached ones no sequence reads."""
        return len(self._free) + len(self.cache.eviction)

    def admit(self, seq: Sequence) -> int:
        """Attach cached prefix blocks to a sequence with no blocks; returns the cached tokens.
        At least one token is always left to compute, so the step yields logits."""
        assert not seq.block_table and seq.num_computed_tokens == 0
        seq.block_hashes = []
        if not self.enable_prefix_caching:
            return 0
        B = self.block_size
        hashes = self._lookup_hashes(seq)
        hits = self.cache.lookup(hashes)
        for b in hits:
            self._acquire(b)
        seq.block_table = list(hits)
        seq.block_hashes = hashes[:len(hits)]
        seq.num_computed_tokens = len(hits) * B
        self.prefix_query_tokens += len(seq)
        self.prefix_hit_tokens += len(hits) * B
        return len(hits) * B

    def inflight_hashes(self, running: list[Sequence]) -> dict[bytes, set[bytes]]:
        """Hashes of the full blocks that admitted sequences are computing and have not named yet
        (their prefill is under way), by the hash of their chain's first block."""
        out: dict[bytes, set[bytes]] = {}
        for seq in running:
            self.note_inflight(out, seq)
        return out

    def note_inflight(self, inflight: dict[bytes, set[bytes]], seq: Sequence) -> None:
        """Add what `seq` (just admitted, or running) is computing to `inflight`."""
        if not self.enable_prefix_caching or seq.num_computed_tokens >= len(seq) - 1:
            return  # decoding: nothing of its prompt left to name
        chain = self._lookup_hashes(seq)
        if len(chain) > len(seq.block_hashes):
            inflight.setdefault(chain[0], set()).update(chain[len(seq.block_hashes):])

    def waits_for_inflight(self, seq: Sequence, inflight: dict[bytes, set[bytes]]) -> bool:
        """True when the first block of `seq` that the cache lacks is one an admitted sequence is
        computing now: admitting `seq` later, once that block is named, saves computing it twice."""
        if not inflight or not self.enable_prefix_caching:
            return False
        chain = self._lookup_hashes(seq)
        if not chain or chain[0] not in inflight:
            return False  # only a sequence with the same first block can share its blocks
        hit = len(self.cache.lookup(chain))
        return hit < len(chain) and chain[hit] in inflight[chain[0]]

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """More blocks the sequence needs to hold its first `num_tokens` tokens."""
        need = (num_tokens + self.block_size - 1) // self.block_size
        return max(0, need - len(seq.block_table))

    def grow(self, seq: Sequence, num_tokens: int) -> bool:
        """Give the sequence blocks for `num_tokens` tokens; False (and no change) if too few."""
        n = self.blocks_needed(seq, num_tokens)
        if n > self.num_free_blocks:
            return False
        for _ in range(n):
            seq.block_table.append(self._take())
        return True

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks (finish, abort, preemption)."""
        self.release(seq.block_table)
        seq.block_table = []

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block of a chain. Tail first, so that under LRU a prompt's
        tail is evicted before the head other prompts may share; a block no one reads becomes
        evictable if it is named in the cache, else free."""
        for b in reversed(blocks):
            self.ref_counts[b] -= 1
            assert self.ref_counts[b] >= 0, f"block {b} released twice"
            if self.ref_counts[b] == 0:
                if self.cache.is_cached(b):
                    self.cache.eviction.add(b)
                else:
                    self._free.append(b)

    def commit(self, seq: Sequence) -> None:
        """Name the sequence's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        B = self.block_size
        done = len(seq.block_hashes)
        full = seq.num_computed_tokens // B
        if full <= done:
            return
        parent = seq.block_hashes[-1] if seq.block_hashes else ROOT
        new = self._hashes(seq.token_ids, done, full, parent)
        root = seq.block_hashes[0] if done else new[0]
        self.cache.register(seq.block_table[done:full], new, parent if done else None, root)
        seq.block_hashes.extend(new)

    def drain_events(self) -> list[dict]:
        return self.cache.drain_events()

    # ---- helpers ----
    def _lookup_hashes(self, seq: Sequence) -> list[bytes]:
        """Chain hashes of the blocks admission may take from the cache: the full blocks before the
        last token (one token is always left to compute). The cached list itself: read, don't change."""
        n = (len(seq) - 1) // self.block_size
        chain = self._chain.get(seq)
        if chain is None:
            chain = self._chain[seq] = []
        if len(chain) < n:
            chain.extend(self._hashes(seq.token_ids, len(chain), n, chain[-1] if chain else ROOT))
        return chain if len(chain) == n else chain[:n]

    def _hashes(self, tokens: list[int], start: int, stop: int, parent: bytes) -> list[bytes]:
        B = self.block_size
        out = []
        for i in range(start, stop):
            parent = chain_hash(parent, self.model_id, tokens[i * B:(i + 1) * B])
            out.append(parent)
        return out

    def _acquire(self, b: int) -> None:
        if self.ref_counts[b] == 0:
            self.cache.eviction.remove(b)
        self.ref_counts[b] += 1

    def _take(self) -> int:
        if self._free:
            b = self._free.popleft()
        else:
            b = self.cache.eviction.victim()
            assert b is not None, "no block to take: caller must check num_free_blocks"
            self.cache.forget(b)
        self.ref_counts[b] = 1
        return b
