"""The KV payload on the wire: one message per transfer.

    u32le  header length H
    H      header, UTF-8 JSON: {"v": 1, "model", "block_size", "dtype", "shape", "block_hashes"}
    ...    the KV bytes: a C-contiguous tensor of `shape` and `dtype`,
           (layers, 2 [k, v], num_blocks, block_size, kv_heads, head_dim)

Block i of the tensor holds the KV of the prompt block named by block_hashes[i] (shared/spec/
block-hash.md); the hashes form a chain from the root, so the receiver can put the blocks in its
prefix cache under the same names.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

import torch

VERSION = 1
MAX_HEADER = 1 << 22  # 4 MiB of JSON: 100k hashes
_HASH = re.compile(r"^[0-9a-f]{32}$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class WireError(ValueError):
    """A KV message that cannot be used; the message says what was expected and what arrived."""


@dataclass
class KvPayload:
    model: str
    block_size: int
    block_hashes: list[str]
    kv: torch.Tensor  # (L, 2, n_blocks, B, Hkv, d), CPU

    def __post_init__(self) -> None:
        if self.kv.dim() != 6 or self.kv.shape[1] != 2:
            raise WireError(f"kv must be (layers, 2, blocks, block_size, kv_heads, head_dim), got {tuple(self.kv.shape)}")
        if self.kv.shape[2] != len(self.block_hashes):
            raise WireError(f"kv holds {self.kv.shape[2]} blocks but {len(self.block_hashes)} hashes were given")
        if self.kv.shape[3] != self.block_size:
            raise WireError(f"kv block dimension is {self.kv.shape[3]}, block_size is {self.block_size}")

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


def _dtype_name(dt: torch.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dt:
            return name
    raise WireError(f"KV dtype {dt} cannot be transferred (expected one of {sorted(DTYPES)})")


def encode(p: KvPayload) -> bytes:
    header = json.dumps({"v": VERSION, "model": p.model, "block_size": p.block_size, "dtype": _dtype_name(p.kv.dtype),
                         "shape": list(p.kv.shape), "block_hashes": p.block_hashes}, separators=(",", ":")).encode()
    body = p.kv.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
    return struct.pack("<I", len(header)) + header + body


def decode(buf: bytes) -> KvPayload:
    if len(buf) < 4:
        raise WireError(f"KV message is {len(buf)} bytes; expected at least a 4-byte header length")
    (hlen,) = struct.unpack_from("<I", buf)
    if hlen > MAX_HEADER or 4 + hlen > len(buf):
        raise WireError(f"KV header length {hlen} does not fit a {len(buf)}-byte message")
    try:
        h = json.loads(buf[4:4 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"KV header is not JSON: {e}") from None
    if not isinstance(h, dict) or h.get("v") != VERSION:
        raise WireError(f"KV header must be an object with v={VERSION}, got {str(h)[:80]}")
    dtype = DTYPES.get(h.get("dtype"))
    if dtype is None:
        raise WireError(f"KV dtype must be one of {sorted(DTYPES)}, got {h.get('dtype')!r}")
    shape, hashes = h.get("shape"), h.get("block_hashes")
    if not (isinstance(shape, list) and len(shape) == 6 and all(isinstance(x, int) and x >= 0 for x in shape)):
        raise WireError(f"KV shape must be 6 non-negative integers, got {shape!r}")
    if not (isinstance(hashes, list) and all(isinstance(x, str) and _HASH.match(x) for x in hashes)):
        raise WireError("block_hashes must be a list of 32-hex-digit block hashes")
    if not isinstance(h.get("model"), str) or not isinstance(h.get("block_size"), int):
        raise WireError("KV header needs a string model and an integer block_size")
    numel = 1
    for x in shape:
        numel *= x
    body = memoryview(buf)[4 + hlen:]
    want = numel * torch.empty(0, dtype=dtype).element_size()
    if len(body) != want:
        raise WireError(f"KV body is {len(body)} bytes; shape {shape} of {h['dtype']} needs {want}")
    kv = torch.frombuffer(bytearray(body), dtype=torch.uint8).view(dtype).reshape(shape) if want else torch.empty(shape, dtype=dtype)
    return KvPayload(model=h["model"], block_size=h["block_size"], block_hashes=hashes, kv=kv)
