"""The attention-backend interface: dense paged now, sparse backends (Quest, streaming heads,
block-sparse prefill) as sibling implementations. The model calls only this.

KV cache layout (per layer), shared by every backend so that the block manager, the prefix
cache and KV transfer need not know which backend runs:
    k_cache, v_cache: (num_blocks, block_size, num_kv_heads, head_dim)   dtype = kv dtype
A token at absolute position p of a sequence lives in block block_table[p // block_size], row
p % block_size. `slot = block * block_size + row` flattens that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

# Per-request attention overrides (protocol $defs/AttentionOverrides): integer field -> (min, max).
# Token counts are bounded by the protocol's token ceiling, not by a pod's max_model_len: the
# edge sends one setting per SLO class to pods of any context length, and a budget or window
# longer than a sequence just means every page. The bound keeps page arithmetic inside int32.
MAX_OVERRIDE_TOKENS = 1 << 20
OVERRIDE_INT_BOUNDS = {
    "token_budget": (16, MAX_OVERRIDE_TOKENS),
    "sink_tokens": (0, MAX_OVERRIDE_TOKENS),
    "window_tokens": (1, MAX_OVERRIDE_TOKENS),  # a streaming head always sees the current token
    "reselect_every": (1, 64),
}
OVERRIDE_KEYS = frozenset({"sparse", *OVERRIDE_INT_BOUNDS})


class OverrideError(ValueError):
    """A bad per-request attention override; `param` is its JSON path (e.g. attention.sink_tokens)."""

    def __init__(self, message: str, param: str = "attention"):
        super().__init__(message)
        self.param = param


def check_attention_overrides(o: dict | None) -> dict | None:
    """The overrides if well formed (None for none or {}), else OverrideError. `sparse` must be a
    bool, the others ints (not bools, not floats) within OVERRIDE_INT_BOUNDS."""
    if o is None:
        return None
    if not isinstance(o, dict):
        raise OverrideError(f"attention overrides must be an object, got {type(o).__name__}")
    unknown = sorted(set(o) - OVERRIDE_KEYS, key=str)
    if unknown:
        raise OverrideError(f"attention overrides take {sorted(OVERRIDE_KEYS)}, got {unknown[0]!r}",
                            f"attention.{unknown[0]}")
    if "sparse" in o and not isinstance(o["sparse"], bool):
        raise OverrideError(f"attention.sparse must be a boolean, got {o['sparse']!r}", "attention.sparse")
    for name, (lo, hi) in OVERRIDE_INT_BOUNDS.items():
        v = o.get(name, lo)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise OverrideError(f"attention.{name} must be an integer in [{lo}, {hi}], got {v!r}", f"attention.{name}")
    return o or None


@dataclass
class AttentionMetadata:
    """What one engine step tells attention. Built once per step by the model runner.

    The step's tokens are packed: first all prefill tokens (sequence by sequence), then one
    token per decoding sequence. T = num_prefill_tokens + num_decode_tokens.
    """

    num_prefill_tokens: int
    num_decode_tokens: int
    # (T,) int64: where each new token's K/V is written in the flat cache (block*B + row).
    slot_mapping: torch.Tensor
    # Prefill part (varlen). n_p = number of prefilling sequences.
    cu_seqlens_q: torch.Tensor | None = None  # (n_p + 1,) int32: new tokens per sequence, cumulated
    cu_seqlens_k: torch.Tensor | None = None  # (n_p + 1,) int32: context (cached + new) per sequence
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    prefill_block_tables: torch.Tensor | None = None  # (n_p, max_blocks) int32, for cached prefixes
    # Decode part. n_d = num_decode_tokens.
    decode_block_tables: torch.Tensor | None = None  # (n_d, max_blocks) int32
    decode_context_lens: torch.Tensor | None = None  # (n_d,) int32: tokens incl. the new one
    # Per-sequence overrides from the request (shared/ protocol `attention`), indexed like the
    # sequences above (prefill sequences first, then decodes). None = model defaults.
    overrides: list[dict | None] = field(default_factory=list)
    # Host copies of cu_seqlens_q / cu_seqlens_k (n_p + 1 ints each), so that a backend that
    # loops over prefill sequences on the host needs no device->host sync.
    cu_seqlens_q_cpu: list[int] | None = None
    cu_seqlens_k_cpu: list[int] | None = None
    # (n_p + n_d,) int32: each sequence's ring slot (streaming_kv="ring", attention_sparse_ring.py),
    # prefill sequences first, then decodes, like `overrides`; None when the engine keeps no rings
    seq_slots: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens


class AttentionBackend(ABC):
    """One instance per model; `forward` is called once per layer per step."""

    name: str = "abstract"
    # True: the model may store k/v itself (the rotary kernel writes them at meta.slot_mapping on
    # CUDA) and call forward(..., kv_written=True), which then skips the write.
    accepts_written_kv: bool = False
    # True: per-request overrides (meta.overrides) change what forward computes, so a step that
    # carries any must not replay a CUDA graph captured without them
    uses_request_overrides: bool = False

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale if scale is not None else head_dim ** -0.5

    def check_request_overrides(self, o: dict | None) -> dict | None:
        """Admission check of one request's attention overrides (engine.add_request calls it), so
        that a bad one is refused there and no engine step ever sees it. Returns what the step
        will get (None: model defaults). Every backend checks the form, whether or not it uses
        the values (a dense backend ignores them): a well-formed request is served by any pod,
        a malformed one refused by any."""
        return check_attention_overrides(o)

    def allocate_layer_state(self, num_blocks: int, block_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Extra per-layer state beside the KV cache (e.g. Quest's per-page key min/max).
        Default: none."""
        return {}

    def rebuild_block_state(self, layer: int, k_cache: torch.Tensor, v_cache: torch.Tensor,
                            layer_state: dict[str, torch.Tensor], blocks: torch.Tensor) -> None:
        """`blocks` (n,) int64 of this layer's cache were filled from outside the model (a KV
        import): rebuild what the backend keeps per block beside the cache. Default: nothing."""

    @abstractmethod
    def forward(
        self,
        layer: int,
        q: torch.Tensor,  # (T, num_heads, head_dim)
        k: torch.Tensor,  # (T, num_kv_heads, head_dim), already rotated
        v: torch.Tensor,  # (T, num_kv_heads, head_dim)
        k_cache: torch.Tensor,  # (num_blocks, block_size, num_kv_heads, head_dim)
        v_cache: torch.Tensor,
        layer_state: dict[str, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (T, num_heads, head_dim)
        """Write k/v into the cache at meta.slot_mapping, then attend."""
