"""Dense linear layers in the activation dtype (bf16 on GPU: cuBLAS through F.linear)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeserve_pod.layers.linear_base import LinearBase, LinearFactory


class Bf16Linear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device: torch.device):
        super().__init__(in_features, out_features, bias)
        # weight: (out_features, in_features) dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)


class Bf16LinearFactory(LinearFactory):
    name = "bf16"

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype = dtype
        self.device = device

    def make(self, in_features: int, out_features: int, bias: bool = False) -> LinearBase:
        return Bf16Linear(in_features, out_features, bias, self.dtype, self.device)
