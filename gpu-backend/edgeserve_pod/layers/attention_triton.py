"""Dense paged attention on the Triton kernels (kernels/paged_attention.py).

Step: write the new K/V (layers/kv_write.py), then varlen paged prefill for the prefill tokens
and split-K decode for the decode tokens. No host sync: every size the kernels need comes from
the metadata's Python ints or tensor shapes, so the decode path can be captured in a CUDA graph.

FP8 KV: pass kv_dtype=torch.float8_e4m3fn; allocate_layer_state then gives each layer its
per-kv-head scales, layer_state["k_scale"] / ["v_scale"] (Hkv,) float32, 0 = not yet set (the
first write sets them, see kv_write.py). The kernels read the fp8 cache and the scales directly.
"""

from __future__ import annotations

import torch

from ..kernels.paged_attention import FP8, paged_decode, paged_prefill
from .attention_base import AttentionBackend, AttentionMetadata
from .kv_write import write_kv


class TritonAttention(AttentionBackend):
    name = "triton"

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None,
                 kv_dtype: torch.dtype | None = None):
        super().__init__(num_heads, num_kv_heads, head_dim, scale)
        if head_dim & (head_dim - 1) or head_dim < 16:
            raise ValueError(f"triton attention needs a power-of-two head_dim >= 16, got {head_dim}")
        self.kv_dtype = kv_dtype
        # fp8: the rotary kernel's write needs the per-head scales, which the runner's start-up
        # calibration sets through kv_write.py (the first write of a head fixes its scale)
        self.fp8_scales_ready = False

    @property
    def accepts_written_kv(self) -> bool:
        return self.kv_dtype != FP8 or self.fp8_scales_ready

    def allocate_layer_state(self, num_blocks: int, block_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        if self.kv_dtype != FP8:
            return {}
        return {"k_scale": torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device),
                "v_scale": torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device)}

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata,
                kv_written: bool = False) -> torch.Tensor:
        # q (T, Hq, D); k, v (T, Hkv, D); caches (num_blocks, BS, Hkv, D)
        k_scale, v_scale = layer_state.get("k_scale"), layer_state.get("v_scale")
        if not kv_written:
            write_kv(k, v, k_cache, v_cache, meta.slot_mapping, k_scale, v_scale)
        out = torch.empty_like(q)
        n_p = meta.num_prefill_tokens
        if n_p:
            paged_prefill(q[:n_p], k_cache, v_cache, meta.prefill_block_tables, meta.cu_seqlens_q,
                          meta.cu_seqlens_k, meta.max_seqlen_q, self.scale, k_scale, v_scale, out=out[:n_p])
        if meta.num_decode_tokens:
            paged_decode(q[n_p:], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                         self.scale, k_scale, v_scale, out=out[n_p:])
        return out
