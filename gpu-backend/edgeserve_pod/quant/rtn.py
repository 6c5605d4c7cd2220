"""4-bit asymmetric group quantization by round-to-nearest: the baseline, and the last step of
SmoothQuant+ (which only rescales W and its input before this).

For each group of G consecutive input channels of one output row:
    s = (max - min) / 15,  z = round(-min / s) in [0, 15],  q = clamp(round(w / s) + z, 0, 15)
so that w ~= (q - z) * s. Max and min include 0, so that an all-positive group keeps z = 0 exact.
An optional clip ratio r (per output row and group, in (0, 1]) shrinks the range to [r min, r max]
before the step is set (AWQ's clipping; the ratio is searched in smoothquant.search_clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeserve_pod.kernels.w4a16 import IB, dequantize, pack_int4

QMAX = 15


@dataclass
class QuantizedWeight:
    qweight: torch.Tensor  # (Kp // 8, N) int32, kernel layout (Kp = K rounded up to 128)
    scales: torch.Tensor  # (ceil(K / G), N) float16
    zeros: torch.Tensor  # (ceil(K / G), N) uint8
    group_size: int
    in_features: int  # K

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:  # (N, K)
        return dequantize(self.qweight, self.scales, self.zeros, self.group_size, self.in_features, dtype)


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, K) -> (N, ng, G) float32, the ragged last group padded by repeating its first column
    (which changes neither its max nor its min)."""
    n, k = w.shape
    ng = -(-k // group_size)
    pad = ng * group_size - k
    w = w.to(torch.float32)
    if pad:
        start = (ng - 1) * group_size
        w = torch.cat([w, w[:, start:start + 1].expand(n, pad)], dim=1)
    return w.view(n, ng, group_size)


def _quantize_grouped(w: torch.Tensor, group_size: int, clip=None):
    """-> q (N, ng, G) float32 codes, s (N, ng) float32 (fp16-representable), z (N, ng) float32."""
    wg = _grouped(w, group_size)  # (N, ng, G)
    wmax = wg.amax(dim=2).clamp(min=0)  # (N, ng)
    wmin = wg.amin(dim=2).clamp(max=0)
    if clip is not None:
        wmax, wmin = wmax * clip, wmin * clip
    s = ((wmax - wmin) / QMAX).clamp(min=1e-8)
    s = s.to(torch.float16).to(torch.float32).clamp(min=6e-8)  # the stored precision decides the codes
    z = torch.round(-wmin / s).clamp(0, QMAX)
    q = torch.clamp(torch.round(wg / s[..., None]) + z[..., None], 0, QMAX)
    return q, s, z


def quantize_codes(w: torch.Tensor, group_size: int, clip: torch.Tensor | float | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (N, K) -> codes (N, K) uint8, scales (N, ng) float16, zeros (N, ng) uint8.
    clip: None, a ratio, or (N, ng) ratios in (0, 1] applied to each group's max and min."""
    n, k = w.shape
    q, s, z = _quantize_grouped(w, group_size, clip)
    codes = q.view(n, -1)[:, :k].to(torch.uint8)
    return codes, s.to(torch.float16), z.to(torch.uint8)


def quantize_rtn(w: torch.Tensor, group_size: int = 128, clip: torch.Tensor | None = None) -> QuantizedWeight:
    """w: (N, K) weight of y = x @ w^T -> QuantizedWeight in the kernel layout (clip: quantize_codes)."""
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight (N, K), got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weight has NaN or Inf entries")
    if group_size < IB or group_size % IB:
        raise ValueError(f"group_size must be a multiple of {IB} (the kernel's K tile), got {group_size}")
    codes, s, z = quantize_codes(w, group_size, clip)
    return QuantizedWeight(pack_int4(codes), s.t().contiguous(), z.t().contiguous(), group_size, w.shape[1])


def fake_quantize(w: torch.Tensor, group_size: int = 128, clip: torch.Tensor | float | None = None) -> torch.Tensor:
    """Quantize-dequantize in float32 without packing: the weight the kernel will multiply by
    (the same float32 arithmetic as kernels/w4a16.dequantize, without the unpacking)."""
    n, k = w.shape
    q, s, z = _quantize_grouped(w, group_size, clip)
    return ((q - z[..., None]) * s[..., None]).view(n, -1)[:, :k]
