"""Dense paged attention in plain torch: the CPU backend and the reference the Triton kernels
are tested against.

Prefill: varlen causal attention of each sequence's new tokens over its whole context (cached
prefix + new tokens), read back from the paged cache. Decode: one query per sequence over
its block table; graph-capturable (no host sync: the table width is the tensor's width and
the context length masks the tail).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeserve_pod.layers.attention_base import AttentionBackend, AttentionMetadata
from edgeserve_pod.layers.kv_write import dequantize, write_kv


class TorchAttention(AttentionBackend):
    name = "torch"

    def allocate_layer_state(self, num_blocks: int, block_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        # Per-head FP8 scales (used only when the cache is fp8); 0 = not calibrated yet.
        return {"k_scale": torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device),
                "v_scale": torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device)}

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        ks, vs = layer_state.get("k_scale"), layer_state.get("v_scale")
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping, ks, vs)
        P = meta.num_prefill_tokens
        if meta.num_decode_tokens == 0:
            return self._prefill(q, k_cache, v_cache, ks, vs, meta)
        if P == 0:
            return self._decode(q, k_cache, v_cache, ks, vs, meta.decode_block_tables, meta.decode_context_lens)
        out = torch.empty_like(q)
        out[:P] = self._prefill(q[:P], k_cache, v_cache, ks, vs, meta)
        out[P:] = self._decode(q[P:], k_cache, v_cache, ks, vs, meta.decode_block_tables, meta.decode_context_lens)
        return out

    def _prefill(self, q, k_cache, v_cache, ks, vs, meta: AttentionMetadata) -> torch.Tensor:
        B = k_cache.shape[1]
        cu_q = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else meta.cu_seqlens_q.tolist()
        cu_k = meta.cu_seqlens_k_cpu if meta.cu_seqlens_k_cpu is not None else meta.cu_seqlens_k.tolist()
        out = torch.zeros_like(q)  # rows past cu_q[-1] (padding of a graph bucket) stay zero
        for i in range(len(cu_q) - 1):
            lq, lk = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
            if lq == 0:  # an empty sequence pads a graph's sequence list
                continue
            blocks = meta.prefill_block_tables[i, : (lk + B - 1) // B]
            kk = dequantize(k_cache[blocks].flatten(0, 1)[:lk], ks, q.dtype)  # (lk, Hkv, d)
            vv = dequantize(v_cache[blocks].flatten(0, 1)[:lk], vs, q.dtype)
            qi = q[cu_q[i]:cu_q[i + 1]].transpose(0, 1).unsqueeze(0)  # (1, H, lq, d)
            kk = kk.transpose(0, 1).unsqueeze(0)  # (1, Hkv, lk, d)
            vv = vv.transpose(0, 1).unsqueeze(0)
            if lq == lk:
                o = F.scaled_dot_product_attention(qi, kk, vv, is_causal=True, scale=self.scale, enable_gqa=True)
            else:
                # query j sits at absolute position lk - lq + j and sees keys 0..that position
                qpos = torch.arange(lk - lq, lk, device=q.device)[:, None]
                mask = torch.arange(lk, device=q.device)[None, :] <= qpos  # (lq, lk) bool
                o = F.scaled_dot_product_attention(qi, kk, vv, attn_mask=mask, scale=self.scale, enable_gqa=True)
            out[cu_q[i]:cu_q[i + 1]] = o[0].transpose(0, 1)  # (lq, H, d)
        return out

    def _decode(self, q, k_cache, v_cache, ks, vs, block_tables, context_lens) -> torch.Tensor:
        # q: (n, H, d); block_tables: (n, W) int32; context_lens: (n,) int32 incl. the new token
        n, W = block_tables.shape
        B = k_cache.shape[1]
        bt = block_tables.long()
        kk = dequantize(k_cache[bt].flatten(1, 2), ks, q.dtype)  # (n, W*B, Hkv, d)
        vv = dequantize(v_cache[bt].flatten(1, 2), vs, q.dtype)
        mask = torch.arange(W * B, device=q.device)[None, :] < context_lens[:, None]  # (n, W*B)
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # (n, H, 1, d)
            kk.transpose(1, 2), vv.transpose(1, 2),  # (n, Hkv, W*B, d)
            attn_mask=mask[:, None, None, :], scale=self.scale, enable_gqa=True)
        return o.squeeze(2)  # (n, H, d)


