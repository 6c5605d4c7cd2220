"""Calibration: run real text through the full-precision model and record, at the input of each
linear group, the per-channel maximum and mean |activation|, the Gram matrix X^T X over every
calibration token (the output error of any weight change E is tr(E X^T X E^T), which is what
smoothquant.py searches on), and a random subsample of input rows. Forward hooks on the plain
torch model (llama_torch.py).

Groups per layer i (one input tensor each):
    layers.i.qkv      input_layernorm output       -> q_proj, k_proj, v_proj
    layers.i.o        attention output (H * d)     -> o_proj
    layers.i.gate_up  post_attention_layernorm out -> gate_proj, up_proj
    layers.i.down     silu(gate) * up              -> down_proj
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgeserve_pod.quant.llama_torch import TorchLlama

HOOKED = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}


@dataclass
class Calibration:
    act_max: dict[str, torch.Tensor] = field(default_factory=dict)  # group -> (K,) float32
    act_mean: dict[str, torch.Tensor] = field(default_factory=dict)  # group -> (K,) float32, mean |x|
    gram: dict[str, torch.Tensor] = field(default_factory=dict)  # group -> (K, K) float32, sum of x x^T
    samples: dict[str, torch.Tensor] = field(default_factory=dict)  # group -> (S, K) float32
    tokens: int = 0


def calibrate(model: TorchLlama, batches: list[torch.Tensor], n_samples: int = 512, seed: int = 0) -> Calibration:
    """batches: list of (B, T) int64 token rows. Keeps about n_samples input rows per group."""
    if not batches:
        raise ValueError("calibration needs at least one batch of tokens")
    cal = Calibration()
    per_batch = max(1, n_samples // len(batches))
    g = torch.Generator().manual_seed(seed)
    picked: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def hook(key):
        def fn(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (B*T, K)
            m = x.abs().amax(0)
            cal.act_max[key] = torch.maximum(cal.act_max[key], m) if key in cal.act_max else m
            a, h = x.abs().sum(0), x.t() @ x
            cal.act_mean[key] = cal.act_mean[key] + a if key in cal.act_mean else a
            cal.gram[key] = cal.gram[key] + h if key in cal.gram else h
            idx = torch.randperm(x.shape[0], generator=g)[:per_batch]
            picked.setdefault(key, []).append(x[idx].clone())
        return fn

    for i, layer in enumerate(model.layers):
        for grp, path in HOOKED.items():
            parent, leaf = path.split(".")
            mod = getattr(getattr(layer, parent), leaf)
            hooks.append(mod.register_forward_pre_hook(hook(f"layers.{i}.{grp}")))
    try:
        for b in batches:
            model(b, logits=False)
            cal.tokens += b.numel()
    finally:
        for h in hooks:
            h.remove()
    cal.samples = {k: torch.cat(v, 0) for k, v in picked.items()}
    cal.act_mean = {k: v / cal.tokens for k, v in cal.act_mean.items()}
    return cal
