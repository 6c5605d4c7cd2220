"""The linear-layer interface: bf16 (cuBLAS) now, W4A16 as a sibling implementation.

The model builds its projections through a `LinearFactory`, so that swapping the weight format
touches no model code. Weights are loaded by name through `load(name, tensor)`; a format that
stores several tensors per layer (qweight, scales, zeros) receives each by its own name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class LinearBase(nn.Module, ABC):
    """y = x @ W^T (+ b). x: (..., in_features) in the activation dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.has_bias = bias

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def load(self, name: str, tensor: torch.Tensor) -> None:
        """Copy a checkpoint tensor into the parameter `name` ("weight", "bias", ...).

        The model hands over a projection's full (already tensor-parallel-sharded) weight in
        the checkpoint's layout, (out_features, in_features); fused projections (q|k|v,
        gate|up) arrive concatenated along out_features. A format that quantizes on load
        overrides this."""
        param = getattr(self, name, None)
        if not isinstance(param, torch.Tensor):
            raise KeyError(f"{type(self).__name__} has no tensor named {name!r}")
        if tuple(param.shape) != tuple(tensor.shape):
            raise ValueError(f"{type(self).__name__}.{name}: expected shape {tuple(param.shape)}, got {tuple(tensor.shape)}")
        with torch.no_grad():
            param.copy_(tensor)


class LinearFactory(ABC):
    """Makes the linear layers of one model in one weight format."""

    name: str = "abstract"

    @abstractmethod
    def make(self, in_features: int, out_features: int, bias: bool = False) -> LinearBase: ...
