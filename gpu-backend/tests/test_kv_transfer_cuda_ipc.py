"""KV transfer over CUDA IPC (kv_transfer/cuda_ipc.py). The message checks, the refusals and the
server routing run everywhere; sharing a real CUDA allocation between two processes needs a GPU
and is skipped without one (bench/kv_transfer_ipc.py runs the whole pod-to-pod path on a GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from edgeserve_pod.kv_transfer import cuda_ipc
from edgeserve_pod.kv_transfer.wire import KvPayload, WireError
from _server_util import gen_body, pod, real_engine_factory, write_tiny

H = "0123456789abcdef0123456789abcdef"
GOOD = {"v": 1, "transport": "cuda_ipc", "model": "m", "block_size": 16, "block_hashes": [H, H],
        "dtype": "bfloat16", "shape": [2, 2, 2, 16, 2, 64], "stride": [8192, 4096, 2048, 128, 64, 1], "offset": 0,
        "device": 0, "handle": "ab" * 32, "size_bytes": 2 ** 16, "offset_bytes": 0, "ref_counter_handle": "2f6d" * 4,
        "ref_counter_offset": 0, "event_handle": None, "event_sync_required": False}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a pod without CUDA")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA IPC needs a CUDA device (none here)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(str(tmp_path_factory.mktemp("tiny")))


def test_parse_accepts_a_well_formed_message():
    m = cuda_ipc.parse(json.dumps(GOOD).encode())
    assert m["shape"][2] == len(m["block_hashes"]) == 2


@pytest.mark.parametrize("change, needle", [
    ({"v": 2}, "v=1"),
    ({"dtype": "int64"}, "dtype"),
    ({"shape": [2, 2, 3, 16, 2, 64]}, "3 blocks but 2 hashes"),
    ({"stride": [1, 2]}, "stride"),
    ({"handle": "XYZ"}, "handle"),
    ({"offset_bytes": -1}, "offset_bytes"),
    ({"block_hashes": ["nothex", H]}, "block_hashes"),
    ({"event_sync_required": "yes"}, "boolean"),
])
def test_parse_refuses_bad_fields(change, needle):
    with pytest.raises(WireError, match=needle):
        cuda_ipc.parse(json.dumps({**GOOD, **change}).encode())
    with pytest.raises(WireError, match="lacks handle"):
        cuda_ipc.parse(json.dumps({k: v for k, v in GOOD.items() if k != "handle"}).encode())
    with pytest.raises(WireError, match="not JSON"):
        cuda_ipc.parse(b"\x80\x04pickle")


def test_share_refuses_a_cpu_tensor():
    p = KvPayload("m", 16, [H], torch.zeros(1, 2, 1, 16, 2, 8))
    with pytest.raises(WireError, match="CUDA device"):
        cuda_ipc.share(p)


@no_cuda
async def test_a_pod_without_cuda_refuses_cuda_ipc(tiny):
    async with pod(real_engine_factory(tiny), pod_id="p") as (client, st):
        r = await client.post("/v1/generate", json=gen_body(kv_transfer={"role": "receive", "transfer_id": "x", "transport": "cuda_ipc"}))
        assert r.status == 501
        rec = await r.json()
        assert rec["error"]["code"] == "kv_transfer_failed" and "CUDA" in rec["error"]["message"]
        # a handle PUT straight to the pod is routed to the IPC reader, which refuses it without CUDA
        r = await client.put("/v1/kv_transfer/y", data=json.dumps(GOOD).encode(), headers={"Content-Type": cuda_ipc.CONTENT_TYPE})
        assert r.status == 400
        assert "no CUDA device" in (await r.json())["error"]["message"]


def _producer(conn, shape):
    """Child process: put known KV on the GPU, share it, keep it alive until the parent has copied."""
    kv = torch.arange(torch.tensor(shape).prod().item(), dtype=torch.float32, device="cuda").reshape(shape).to(torch.bfloat16)
    conn.send(cuda_ipc.share(KvPayload("m", shape[3], [H] * shape[2], kv)))
    conn.recv()  # the parent's "copied"
    conn.close()


@needs_cuda
def test_two_processes_share_kv_through_an_ipc_handle():
    import torch.multiprocessing as mp

    shape = (2, 2, 3, 16, 2, 64)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_producer, args=(child, shape))
    proc.start()
    try:
        got = cuda_ipc.open_shared(parent.recv())
        parent.send("copied")
    finally:
        proc.join(60)
    want = torch.arange(torch.tensor(shape).prod().item(), dtype=torch.float32).reshape(shape).to(torch.bfloat16)
    assert got.kv.is_cuda and got.kv.dtype == torch.bfloat16
    assert torch.equal(got.kv.cpu(), want)
    assert got.block_hashes == [H] * 3 and got.block_size == 16
