"""A plain torch Llama forward over an HF folder, for calibration and perplexity on CPU.

Not the engine's model: full-sequence causal attention, no KV cache, batch of equal-length rows.
Projections are named nn.Linear modules (`layers.i.self_attn.q_proj`, ...) so that calibration
attaches forward hooks and the quantizer swaps weights in place. `kv_quant`, when set, is
applied to K (after rotary) and V before attention: the way a KV cache stored in a lower
precision is read back.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from edgeserve_pod.layers.rotary import inv_frequencies

PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def load_hf(folder: str, dtype: torch.dtype = torch.float32) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{folder!r} is not an HF folder (no config.json)")
    with open(cfg_path) as f:
        config = json.load(f)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(f"no *.safetensors in {folder!r}")
    w: dict[str, torch.Tensor] = {}
    for p in files:
        w.update({k: v.to(dtype) for k, v in load_file(p).items()})
    return config, w


class _Layer(nn.Module):
    def __init__(self, c: dict, w: dict, i: int):
        super().__init__()
        p = f"model.layers.{i}."
        self.input_layernorm = nn.Parameter(w[p + "input_layernorm.weight"], requires_grad=False)
        self.post_attention_layernorm = nn.Parameter(w[p + "post_attention_layernorm.weight"], requires_grad=False)
        self.self_attn = nn.Module()
        self.mlp = nn.Module()
        for name in PROJ:
            parent, leaf = name.split(".")
            wt = w[p + name + ".weight"]
            lin = nn.Linear(wt.shape[1], wt.shape[0], bias=(p + name + ".bias") in w)
            lin.weight = nn.Parameter(wt, requires_grad=False)
            if lin.bias is not None:
                lin.bias = nn.Parameter(w[p + name + ".bias"], requires_grad=False)
            setattr(getattr(self, parent), leaf, lin)


class TorchLlama(nn.Module):
    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        super().__init__()
        c = self.c = config
        self.H, self.Hkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.d = c.get("head_dim") or c["hidden_size"] // self.H
        self.eps = c["rms_norm_eps"]
        self.embed = nn.Parameter(weights["model.embed_tokens.weight"], requires_grad=False)
        self.norm = nn.Parameter(weights["model.norm.weight"], requires_grad=False)
        self.lm_head = nn.Parameter(weights.get("lm_head.weight", weights["model.embed_tokens.weight"]), requires_grad=False)
        self.layers = nn.ModuleList(_Layer(c, weights, i) for i in range(c["num_hidden_layers"]))
        self.register_buffer("inv", inv_frequencies(self.d, c.get("rope_theta", 10000.0), c.get("rope_scaling")))
        self.kv_quant: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_folder(cls, folder: str, dtype: torch.dtype = torch.float32) -> "TorchLlama":
        return cls(*load_hf(folder, dtype))

    def _rms(self, x, g):
        return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rotary(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:  # (1, 1, T, d/2) each
        ang = torch.outer(torch.arange(T, dtype=torch.float32), self.inv)
        return ang.cos()[None, None], ang.sin()[None, None]

    def attn_block(self, L: _Layer, x: torch.Tensor, rot) -> torch.Tensor:
        """(B, T, D) residual stream -> the attention block's output o_proj(attn(norm(x)))."""
        B, T, _ = x.shape
        H, Hkv, d = self.H, self.Hkv, self.d
        cos, sin = (r.to(x.dtype) for r in rot)

        def rope(t):  # (B, heads, T, d), rotate-half pairs (i, i + d/2)
            a, b = t[..., : d // 2], t[..., d // 2:]
            return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

        h = self._rms(x, L.input_layernorm)
        q = rope(L.self_attn.q_proj(h).view(B, T, H, d).transpose(1, 2))
        k = rope(L.self_attn.k_proj(h).view(B, T, Hkv, d).transpose(1, 2))
        v = L.self_attn.v_proj(h).view(B, T, Hkv, d).transpose(1, 2)
        if self.kv_quant is not None:
            k, v = self.kv_quant(k), self.kv_quant(v)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, d)
        return L.self_attn.o_proj(o.transpose(1, 2).reshape(B, T, H * d))

    def mlp_block(self, L: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = self._rms(x, L.post_attention_layernorm)
        return L.mlp.down_proj(F.silu(L.mlp.gate_proj(h)) * L.mlp.up_proj(h))

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, layer_inputs: list | None = None, logits: bool = True) -> torch.Tensor | None:
        """(B, T) int64 -> logits (B, T, V) f32. layer_inputs, when given, receives each layer's
        input residual stream (B, T, D). logits=False stops after the last layer and returns None
        (calibration needs only the layers' inputs; the LM head is a fifth of the FLOPs)."""
        x = F.embedding(tokens, self.embed)  # (B, T, D)
        rot = self.rotary(tokens.shape[1])
        for L in self.layers:
            if layer_inputs is not None:
                layer_inputs.append(x)
            x = x + self.attn_block(L, x, rot)
            x = x + self.mlp_block(L, x)
        if not logits:
            return None
        return F.linear(self._rms(x, self.norm), self.lm_head).float()
