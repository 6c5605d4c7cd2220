"""Rotary position embedding (rotate-half layout, as HF Llama/Qwen2), with Llama-3 frequency
scaling. cos/sin are precomputed once for every position up to max_positions."""

from __future__ import annotations

import math

import torch
from torch import nn


def inv_frequencies(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:  # (head_dim/2,) f32
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv.float()
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old = scaling["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * math.pi / inv
        scaled = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wl >= high_wl) & (wl <= low_wl)
        return torch.where(is_mid, mid, scaled).float()
    if kind == "linear":
        return (inv / scaling["factor"]).float()
    raise ValueError(f"rope scaling type {kind!r} is not supported (supported: default, llama3, linear)")


class Rotary(nn.Module):
    def __init__(self, head_dim: int, max_positions: int, theta: float, scaling: dict | None, device: torch.device):
        super().__init__()
        inv = inv_frequencies(head_dim, theta, scaling)
        t = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(t, inv)  # (max_positions, head_dim/2)
        # (max_positions, head_dim/2) float32; the torch path repeats them for the rotate-half layout
        self.register_buffer("cos_half", freqs.cos().to(device), persistent=False)
        self.register_buffer("sin_half", freqs.sin().to(device), persistent=False)
        self.head_dim = head_dim
        self.fused = (head_dim // 2) & (head_dim // 2 - 1) == 0  # the Triton kernel needs a power-of-two half

    def can_write_kv(self, qkv: torch.Tensor) -> bool:
        """Whether apply_qk(..., kv_write=...) stores k/v into the cache in the same kernel."""
        return qkv.is_cuda and self.fused

    def apply_qk(self, positions: torch.Tensor, qkv: torch.Tensor, num_q: int, num_kv: int,
                 kv_write: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate the q and k heads at the front of a fused q|k|v projection (T, (num_q + 2 num_kv) d).
        Returns q (T, num_q, d) and k (T, num_kv, d); on CUDA they are views rotated in place.
        kv_write = (k_cache, v_cache, slot_mapping, k_scale, v_scale), only where can_write_kv():
        the kernel also stores the rotated k and the v heads into the paged caches (the scales:
        fp8 caches only, else None)."""
        T, d = qkv.shape[0], self.head_dim
        if qkv.is_cuda and self.fused:
            from edgeserve_pod.kernels.fused_elementwise import rope_inplace

            rope_inplace(qkv, positions, self.cos_half, self.sin_half, num_q + num_kv, d,
                         kv_write=None if kv_write is None else (num_q, *kv_write))
            return qkv[:, :num_q * d].view(T, num_q, d), qkv[:, num_q * d:(num_q + num_kv) * d].view(T, num_kv, d)
        if kv_write is not None:
            raise ValueError("kv_write needs the fused CUDA rotary kernel (see can_write_kv)")
        q = qkv[:, :num_q * d].view(T, num_q, d)
        k = qkv[:, num_q * d:(num_q + num_kv) * d].view(T, num_kv, d)
        return self.forward(positions, q, k)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: (T,) int64; q: (T, H, d); k: (T, Hkv, d)
        c, s = self.cos_half[positions], self.sin_half[positions]  # (T, d/2)
        cos = torch.cat([c, c], -1).unsqueeze(1).to(q.dtype)  # (T, 1, d)
        sin = torch.cat([s, s], -1).unsqueeze(1).to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)
