"""SiLU(gate) * up of a fused gate|up projection: Triton on CUDA, torch reference on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(gu: torch.Tensor) -> torch.Tensor:  # (T, 2I) -> (T, I)
    if gu.is_cuda:
        from edgeserve_pod.kernels.fused_elementwise import silu_mul

        return silu_mul(gu)
    return silu_and_mul_reference(gu)


def silu_and_mul_reference(gu: torch.Tensor) -> torch.Tensor:
    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u
