"""KvEventLog: numbered batches, reading after a seq, bounded memory, restarts counted upwards."""

from __future__ import annotations

import time

import pytest

from edgeserve_pod import protocol
from edgeserve_pod.server.kv_log import KvEventLog

H = ["%032x" % i for i in range(10)]


def stored(*hashes, parent=None):
    return {"type": "stored", "block_hashes": list(hashes), "parent_hash": parent}


def test_batches_are_numbered_and_read_after_a_seq():
    log = KvEventLog("pod-a", "m", 16, start_seq=100)
    assert log.cut()["events"] == [{"type": "cleared", "block_hashes": []}]  # a new log starts from an empty cache
    assert log.cut() is None  # nothing pending, no empty batch
    log.add([stored(H[0])])
    log.add([stored(H[1], parent=H[0]), {"type": "evicted", "block_hashes": [H[0]]}])
    b = log.cut()
    assert b == {"pod_id": "pod-a", "model": "m", "seq": 102, "block_size": 16,
                 "events": [stored(H[0]), stored(H[1], parent=H[0]), {"type": "evicted", "block_hashes": [H[0]]}]}
    protocol.validate("KvEventBatch", b)
    assert [x["seq"] for x in log.since(0)] == [101, 102]
    assert [x["seq"] for x in log.since(101)] == [102]
    assert log.since(102) == [] and log.since(10**9) == []
    assert log.last_seq == 102


def test_only_the_newest_batches_are_kept():
    log = KvEventLog("pod-a", "m", 16, keep=3, start_seq=0)
    for i in range(6):
        log.add([stored(H[i])])
        log.cut()
    assert [x["seq"] for x in log.since(0)] == [4, 5, 6]  # 1..3 dropped: a reader after 1 sees the gap
    assert [x["seq"] for x in log.since(4, limit=1)] == [5]


def test_a_restarted_pod_numbers_above_its_previous_run():
    before = KvEventLog("pod-a", "m", 16)
    for i in range(5):  # cut on a timer no faster than ServerConfig allows (2 ms)
        time.sleep(0.002)
        before.add([stored(H[i])])
        before.cut()
    after = KvEventLog("pod-a", "m", 16)
    assert after.cut()["seq"] > before.last_seq


def test_keep_must_be_positive():
    with pytest.raises(ValueError):
        KvEventLog("p", "m", 16, keep=0)
