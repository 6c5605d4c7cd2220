"""KV events carry root_hash, the first block hash of their chain: the edge shards its prefix index
by it (workers/routing/kv-events.ts), so stored and evicted events must name the right root."""

from __future__ import annotations

from edgeserve_pod import protocol
from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.sequence import SamplingParams, Sequence


def run(bm: BlockManager, tokens: list[int], rid: str) -> Sequence:
    s = Sequence(rid, tokens, SamplingParams(max_tokens=4))
    bm.admit(s)
    assert bm.grow(s, len(tokens))
    s.num_computed_tokens = len(tokens)
    bm.commit(s)
    return s


def test_stored_and_evicted_events_name_their_chains_first_block():
    bm = BlockManager(6, 2, "m")
    a = run(bm, [1, 2, 3, 4, 5, 6, 7], "a")  # 3 full blocks
    root_a = a.block_hashes[0].hex()
    # a second request extends a's chain past the cached head: its new blocks still name a's root
    b = run(bm, [1, 2, 3, 4, 5, 6, 9, 9, 9], "b")
    assert b.block_hashes[:3] == a.block_hashes[:3]
    events = bm.drain_events()
    stored = [e for e in events if e["type"] == "stored"]
    assert len(stored) == 2 and all(e["root_hash"] == root_a for e in stored)
    assert stored[1]["parent_hash"] == a.block_hashes[2].hex()
    bm.free(a)
    bm.free(b)
    # another chain takes every block: the old chain's blocks are evicted, each naming root_a
    c = run(bm, list(range(100, 111)), "c")
    events = bm.drain_events()
    evicted = [e for e in events if e["type"] == "evicted"]
    assert evicted and all(e["root_hash"] == root_a for e in evicted)
    assert [e["root_hash"] for e in events if e["type"] == "stored"] == [c.block_hashes[0].hex()]
    batch = {"pod_id": "p", "model": "m", "seq": 1, "block_size": 2, "events": events}
    protocol.validate("KvEventBatch", batch)
