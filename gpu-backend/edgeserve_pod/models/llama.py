"""Llama-family decoder (Llama 3.x, Qwen2/2.5 with q/k/v bias, SmolLM2; tied embeddings).

Packed tokens in, hidden states out: forward(input_ids (T,), positions (T,), meta) where the
step's sequences are packed back to back (AttentionMetadata says how). Projections come from a
LinearFactory; attention from an AttentionBackend. Under tensor parallelism each rank holds
num_heads/tp query heads, num_kv_heads/tp KV heads and intermediate/tp MLP columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeserve_pod.layers.activation import silu_and_mul
from edgeserve_pod.layers.attention_base import AttentionBackend, AttentionMetadata
from edgeserve_pod.layers.linear_base import LinearFactory
from edgeserve_pod.layers.linear_bf16 import Bf16Linear
from edgeserve_pod.layers.rmsnorm import RMSNorm
from edgeserve_pod.layers.rotary import Rotary
from edgeserve_pod.models.arch import ModelArch
from edgeserve_pod.parallel import TPGroup

# Decode batches of this many rows run the fused GEMVs (kernels/gemv.py takes up to 4, but at
# M = 4 it is 2x slower than cuBLAS on the H100: bench/results/pod-engine/*-gemv-sweep.json)
GEMV_MAX_M = 1


class DecoderLayer(nn.Module):
    def __init__(self, idx: int, a: ModelArch, lin: LinearFactory, attn: AttentionBackend, tp: TPGroup,
                 dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.idx = idx
        self.tp = tp
        self.h = a.num_heads // tp.size  # local query heads
        self.hkv = a.num_kv_heads // tp.size  # local KV heads
        self.d = a.head_dim
        self.inter = a.intermediate_size // tp.size
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)
        self.qkv_proj = lin.make(a.hidden_size, (self.h + 2 * self.hkv) * self.d, bias=a.qkv_bias)
        self.o_proj = lin.make(self.h * self.d, a.hidden_size, bias=False)
        self.gate_up_proj = lin.make(a.hidden_size, 2 * self.inter, bias=False)
        self.down_proj = lin.make(self.inter, a.hidden_size, bias=False)
        self.attn = attn

    def fused_ok(self, x: torch.Tensor) -> bool:
        """Whether this step's GEMVs run as fused bf16 GEMV kernels (kernels/gemv.py): a decode
        batch of at most MAX_M rows on CUDA, bf16 linears, one rank (the residual epilogue would
        add the residual before the all-reduce)."""
        return (x.is_cuda and x.shape[0] <= GEMV_MAX_M and self.tp.size == 1
                and all(isinstance(p, Bf16Linear) for p in (self.qkv_proj, self.o_proj, self.gate_up_proj, self.down_proj)))

    def forward(self, x, residual, positions, rotary: Rotary, kv: tuple[torch.Tensor, torch.Tensor],
                state: dict, meta: AttentionMetadata, fused: bool = False):
        # x, residual: (T, D); returns this layer's output and the residual stream before it.
        # fused (see fused_ok): x may be None (the residual is the whole stream); returns (None, stream)
        if fused:
            from edgeserve_pod.kernels.gemv import gemv

            r = residual if x is None else (x if residual is None else residual + x)
            qkv = gemv(r, self.qkv_proj.weight, self.qkv_proj.bias, prologue="rmsnorm",
                       norm_weight=self.input_layernorm.weight, eps=self.input_layernorm.eps)
            o = self._attention(qkv, positions, rotary, kv, state, meta)
            r = gemv(o, self.o_proj.weight, residual=r)
            gu = gemv(r, self.gate_up_proj.weight, prologue="rmsnorm", norm_weight=self.post_attention_layernorm.weight,
                      eps=self.post_attention_layernorm.eps)
            return None, gemv(gu, self.down_proj.weight, prologue="silu_mul", residual=r)
        h, residual = self.input_layernorm.add_forward(x, residual)
        o = self._attention(self.qkv_proj(h), positions, rotary, kv, state, meta)
        x = self.tp.all_reduce(self.o_proj(o))
        h, residual = self.post_attention_layernorm.add_forward(x, residual)
        x = self.tp.all_reduce(self.down_proj(silu_and_mul(self.gate_up_proj(h))))  # gate_up: (T, 2 inter)
        return x, residual

    def _attention(self, qkv, positions, rotary: Rotary, kv, state: dict, meta: AttentionMetadata) -> torch.Tensor:
        # qkv (T, (h + 2 hkv) d) -> attention output (T, h d)
        T = qkv.shape[0]
        v = qkv[:, (self.h + self.hkv) * self.d:].view(T, self.hkv, self.d)
        if self.attn.accepts_written_kv and rotary.can_write_kv(qkv):  # rotary + KV store in one kernel
            q, k = rotary.apply_qk(positions, qkv, self.h, self.hkv,
                                   kv_write=(kv[0], kv[1], meta.slot_mapping, state.get("k_scale"), state.get("v_scale")))
            o = self.attn.forward(self.idx, q, k, v, kv[0], kv[1], state, meta, kv_written=True)  # (T, h, d)
        else:
            q, k = rotary.apply_qk(positions, qkv, self.h, self.hkv)
            o = self.attn.forward(self.idx, q, k, v, kv[0], kv[1], state, meta)
        return o.reshape(T, self.h * self.d)


class LlamaModel(nn.Module):
    def __init__(self, a: ModelArch, lin: LinearFactory, attn: AttentionBackend, tp: TPGroup,
                 dtype: torch.dtype, device: torch.device, max_positions: int):
        super().__init__()
        self.arch = a
        self.tp = tp
        self.embed_tokens = nn.Parameter(torch.empty(a.vocab_size, a.hidden_size, dtype=dtype, device=device), requires_grad=False)
        self.layers = nn.ModuleList(DecoderLayer(i, a, lin, attn, tp, dtype, device) for i in range(a.num_layers))
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps, dtype, device)
        self.lm_head = self.embed_tokens if a.tie_word_embeddings else nn.Parameter(
            torch.empty(a.vocab_size, a.hidden_size, dtype=dtype, device=device), requires_grad=False)
        self.rotary = Rotary(a.head_dim, max_positions, a.rope_theta, a.rope_scaling, device)
        self.fused_gemv = True  # decode batches of <= GEMV_MAX_M rows use the fused GEMVs (DecoderLayer.fused_ok)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list, states: list[dict],
                meta: AttentionMetadata) -> torch.Tensor:
        # input_ids, positions: (T,) int64 -> hidden (T, D), after the final norm
        x, residual = self._layers(input_ids, positions, kv_caches, states, meta)
        return self.norm.add_forward(residual, None)[0] if x is None else self.norm.add_forward(x, residual)[0]

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list, states: list[dict],
               meta: AttentionMetadata) -> torch.Tensor:
        """forward + compute_logits for every token row: (T, V) float32. On the fused path the
        final norm rides in the lm_head GEMV's prologue."""
        x, residual = self._layers(input_ids, positions, kv_caches, states, meta)
        if x is None:
            from edgeserve_pod.kernels.gemv import gemv

            return gemv(residual, self.lm_head, prologue="rmsnorm", norm_weight=self.norm.weight, eps=self.norm.eps).float()
        return self.compute_logits(self.norm.add_forward(x, residual)[0])

    def _layers(self, input_ids, positions, kv_caches, states, meta) -> tuple[torch.Tensor | None, torch.Tensor]:
        x = F.embedding(input_ids, self.embed_tokens)
        residual = None
        fused = self.fused_gemv and self.layers[0].fused_ok(x)
        for i, layer in enumerate(self.layers):
            x, residual = layer(x, residual, positions, self.rotary, kv_caches[i], states[i], meta, fused)
        return x, residual

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # (n, D) -> (n, V) float32
        return F.linear(hidden, self.lm_head).float()
