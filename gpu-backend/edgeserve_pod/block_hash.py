"""Block hashing v1 (shared/spec/block-hash.md): prefix names shared with the edge."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

BLOCK_HASH_BYTES = 16
DEFAULT_BLOCK_SIZE = 16
ROOT = bytes(BLOCK_HASH_BYTES)


def chain_hash(parent: bytes, model: str, tokens: Sequence[int]) -> bytes:
    """Hash of one full block given its parent's 16-byte hash."""
    model_bytes = model.encode("utf-8")
    h = hashlib.sha256()
    h.update(parent)
    h.update(struct.pack("<I", len(model_bytes)))
    h.update(model_bytes)
    h.update(struct.pack("<I", len(tokens)))
    h.update(struct.pack(f"<{len(tokens)}I", *tokens))
    return h.digest()[:BLOCK_HASH_BYTES]


def block_hashes(model: str, tokens: Sequence[int], block_size: int = DEFAULT_BLOCK_SIZE) -> list[str]:
    """Hex hashes of the full blocks of `tokens`; hash i names tokens [0, (i+1)*block_size)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    out: list[str] = []
    parent = ROOT
    for i in range(len(tokens) // block_size):
        parent = chain_hash(parent, model, tokens[i * block_size:(i + 1) * block_size])
        out.append(parent.hex())
    return out
