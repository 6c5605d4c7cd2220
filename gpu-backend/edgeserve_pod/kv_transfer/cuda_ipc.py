"""KV transfer over CUDA IPC: two pod processes on one GPU (or peer GPUs of one host).

The prefill pod gathers the prompt's KV blocks into one contiguous CUDA tensor and shares its
allocation through a CUDA IPC handle (torch.multiprocessing.reductions.reduce_tensor: the same
mechanism torch uses to pass CUDA tensors between processes). It PUTs a small JSON message naming
the handle, not the KV bytes, to the decode pod, which maps the allocation
(rebuild_cuda_tensor -> cudaIpcOpenMemHandle), copies the blocks into memory of its own (one
device-to-device copy), drops the mapping and answers. Only then does the sender free its tensor,
so the mapping never outlives the memory.

The message is JSON with a fixed set of fields, never pickle: a pod does not unpickle bytes from
the network. Only `rebuild_cuda_tensor` with torch.Tensor / torch.storage.TypedStorage is used (what reduce_tensor names).

    {"v": 1, "transport": "cuda_ipc", "model", "block_size", "block_hashes", "dtype", "shape",
     "stride", "offset", "device", "handle", "size_bytes", "offset_bytes", "ref_counter_handle",
     "ref_counter_offset", "event_handle", "event_sync_required"}     (handles: hex strings)
"""

from __future__ import annotations

import json

import torch

from edgeserve_pod.kv_transfer.wire import DTYPES, KvPayload, WireError, _HASH, _dtype_name

CONTENT_TYPE = "application/x-edgeserve-kv-cuda-ipc"
VERSION = 1
_FIELDS = ("dtype", "shape", "stride", "offset", "device", "handle", "size_bytes", "offset_bytes",
           "ref_counter_handle", "ref_counter_offset", "event_handle", "event_sync_required")


def available() -> bool:
    return torch.cuda.is_available()


def _hex(b: bytes | None) -> str | None:
    return None if b is None else bytes(b).hex()


def share(p: KvPayload) -> bytes:
    """The IPC message for a payload whose `kv` is a contiguous CUDA tensor. The caller keeps
    `p.kv` alive until the receiver has answered."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor, reduce_tensor

    if not p.kv.is_cuda:
        raise WireError("CUDA IPC needs the KV on a CUDA device")
    if not p.kv.is_contiguous():
        raise WireError("CUDA IPC needs a contiguous KV tensor")
    fn, args = reduce_tensor(p.kv)
    if fn is not rebuild_cuda_tensor:
        raise WireError(f"torch shared the KV with {getattr(fn, '__name__', fn)}, not rebuild_cuda_tensor")
    (_cls, size, stride, offset, _storage_cls, dtype, device, handle, size_bytes, offset_bytes, _grad,
     rc_handle, rc_offset, ev_handle, ev_sync) = args
    msg = {"v": VERSION, "transport": "cuda_ipc", "model": p.model, "block_size": p.block_size,
           "block_hashes": p.block_hashes, "dtype": _dtype_name(dtype), "shape": list(size), "stride": list(stride),
           "offset": int(offset), "device": int(device), "handle": _hex(handle), "size_bytes": int(size_bytes),
           "offset_bytes": int(offset_bytes), "ref_counter_handle": _hex(rc_handle), "ref_counter_offset": int(rc_offset),
           "event_handle": _hex(ev_handle), "event_sync_required": bool(ev_sync)}
    return json.dumps(msg, separators=(",", ":")).encode()


def parse(buf: bytes) -> dict:
    """Checks an IPC message's fields (no CUDA needed); WireError says what is wrong."""
    try:
        m = json.loads(buf)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"CUDA IPC message is not JSON: {e}") from None
    if not isinstance(m, dict) or m.get("v") != VERSION or m.get("transport") != "cuda_ipc":
        raise WireError(f"CUDA IPC message must be an object with v={VERSION} and transport cuda_ipc")
    missing = [k for k in ("model", "block_size", "block_hashes", *_FIELDS) if k not in m]
    if missing:
        raise WireError(f"CUDA IPC message lacks {', '.join(missing)}")
    if m["dtype"] not in DTYPES:
        raise WireError(f"KV dtype must be one of {sorted(DTYPES)}, got {m['dtype']!r}")
    for k in ("shape", "stride"):
        if not (isinstance(m[k], list) and len(m[k]) == 6 and all(isinstance(x, int) and x >= 0 for x in m[k])):
            raise WireError(f"{k} must be 6 non-negative integers, got {m[k]!r}")
    for k in ("offset", "device", "size_bytes", "offset_bytes", "ref_counter_offset", "block_size"):
        if not isinstance(m[k], int) or isinstance(m[k], bool) or m[k] < 0:
            raise WireError(f"{k} must be a non-negative integer, got {m[k]!r}")
    for k in ("handle", "ref_counter_handle", "event_handle"):
        v = m[k]
        if v is None and k == "event_handle":
            continue
        if not isinstance(v, str) or len(v) % 2 or len(v) > 4096 or any(c not in "0123456789abcdef" for c in v):
            raise WireError(f"{k} must be a lowercase hex string, got {str(v)[:40]!r}")
    hashes = m["block_hashes"]
    if not (isinstance(hashes, list) and all(isinstance(x, str) and _HASH.match(x) for x in hashes)):
        raise WireError("block_hashes must be a list of 32-hex-digit block hashes")
    if m["shape"][2] != len(hashes):
        raise WireError(f"the KV holds {m['shape'][2]} blocks but {len(hashes)} hashes were given")
    if not isinstance(m["model"], str) or not isinstance(m["event_sync_required"], bool):
        raise WireError("model must be a string and event_sync_required a boolean")
    return m


def open_shared(buf: bytes, device: torch.device | None = None) -> KvPayload:
    """Maps the sender's KV, copies it into this process's memory on `device` and unmaps it."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    m = parse(buf)
    if not available():
        raise WireError("CUDA IPC message received but this pod has no CUDA device")
    unhex = lambda s: None if s is None else bytes.fromhex(s)  # noqa: E731
    mapped = rebuild_cuda_tensor(torch.Tensor, tuple(m["shape"]), tuple(m["stride"]), m["offset"], torch.storage.TypedStorage,
                                 DTYPES[m["dtype"]], m["device"], unhex(m["handle"]), m["size_bytes"], m["offset_bytes"],
                                 False, unhex(m["ref_counter_handle"]), m["ref_counter_offset"], unhex(m["event_handle"]),
                                 m["event_sync_required"])
    try:
        own = torch.empty(mapped.shape, dtype=mapped.dtype, device=device or mapped.device)
        own.copy_(mapped)
        torch.cuda.synchronize(own.device)
    finally:
        del mapped  # the sender may free its tensor once we answer
    return KvPayload(m["model"], m["block_size"], list(m["block_hashes"]), own)
