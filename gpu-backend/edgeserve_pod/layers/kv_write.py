"""Write a step's new K/V into the paged cache (reference for every backend).

bf16/fp32 caches take the values as they are. FP8 (e4m3) caches store value / scale with one
scale per KV head (per layer); a scale that is still 0 is set from the first write that reaches
it (amax * 2 / 448, i.e. 2x headroom), which the model runner does once at start-up with a
calibration prompt. Everything is tensor ops on device: no host sync, graph-capturable.
"""

from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0


def write_kv(
    k: torch.Tensor,  # (T, Hkv, d) activation dtype
    v: torch.Tensor,  # (T, Hkv, d)
    k_cache: torch.Tensor,  # (num_blocks, B, Hkv, d) cache dtype
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # (T,) int64: block * B + row
    k_scale: torch.Tensor | None = None,  # (Hkv,) float32, fp8 only
    v_scale: torch.Tensor | None = None,
) -> None:
    kf = k_cache.view(-1, k_cache.shape[-2], k_cache.shape[-1])  # (num_blocks*B, Hkv, d)
    vf = v_cache.view(-1, v_cache.shape[-2], v_cache.shape[-1])
    if k_cache.dtype == FP8_DTYPE:
        k = quantize_fp8(k, k_scale)
        v = quantize_fp8(v, v_scale)
        # index_copy_ has no float8 kernel on CPU: copy the bytes through uint8 views.
        kf.view(torch.uint8).index_copy_(0, slot_mapping, k.view(torch.uint8))
        vf.view(torch.uint8).index_copy_(0, slot_mapping, v.view(torch.uint8))
        return
    kf.index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    vf.index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # (T, Hkv, d) -> same, fp8
    amax = x.detach().abs().amax(dim=(0, 2)).float()  # (Hkv,)
    fresh = torch.clamp(amax * 2.0 / FP8_MAX, min=1e-6)
    scale.copy_(torch.where(scale > 0, scale, fresh))
    return (x.float() / scale[None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize(cache_rows: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """cache_rows: (..., Hkv, d) in cache dtype -> activation dtype."""
    if cache_rows.dtype != FP8_DTYPE:
        return cache_rows.to(dtype)
    return (cache_rows.float() * scale[:, None]).to(dtype)
