"""RMSNorm as in HF Llama: normalise in float32, scale in the activation dtype. `add_forward`
also adds the residual stream first; on CUDA both run as one Triton kernel
(kernels/fused_elementwise.py), on CPU as the torch reference below."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device), requires_grad=False)  # (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, dim) -> (T, dim)
        return self.add_forward(x, None)[0]

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(RMSNorm(residual + x), residual + x); residual None means x is the residual.
        On CUDA the given residual tensor is updated in place."""
        if x.is_cuda:
            from edgeserve_pod.kernels.fused_elementwise import add_rmsnorm

            y = add_rmsnorm(x, residual, self.weight, self.eps)
            return y, (x if residual is None else residual)
        return self.reference(x, residual)

    def reference(self, x: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        r = x if residual is None else residual + x
        dtype = r.dtype
        xf = r.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype), r
