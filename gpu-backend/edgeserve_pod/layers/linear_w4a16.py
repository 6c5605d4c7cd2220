"""W4A16 linear layers: 4-bit group-quantized weights (kernels/w4a16.py layout), 16-bit
activations. On CUDA the Triton kernel runs (config chosen by M); elsewhere the torch
dequantize-then-matmul reference, so CPU tests exercise the same tensors.

Loading: a quantized checkpoint (quant/checkpoint.py) hands over `qweight`, `scales`, `zeros`
per projection; fused projections (q|k|v, gate|up) arrive concatenated along N, which is the
last dimension of all three. A plain `weight` (a bf16 checkpoint) is quantized on load by
round-to-nearest, so `--quantization w4a16` also runs from an unquantized folder.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeserve_pod.kernels.w4a16 import IB, PACK, padded_k, w4a16_matmul
from edgeserve_pod.layers.linear_base import LinearBase, LinearFactory

GROUP_SIZE = 128


class W4A16Linear(LinearBase):
    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device: torch.device,
                 group_size: int = GROUP_SIZE):
        super().__init__(in_features, out_features, bias)
        if group_size % IB:
            raise ValueError(f"group_size must be a multiple of {IB}, got {group_size}")
        self.group_size = group_size
        ng = -(-in_features // group_size)
        # qweight: (Kp/8, N) int32; scales: (ng, N) fp16; zeros: (ng, N) uint8
        self.register_buffer("qweight", torch.zeros(padded_k(in_features) // PACK, out_features, dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(ng, out_features, dtype=torch.float16, device=device))
        self.register_buffer("zeros", torch.zeros(ng, out_features, dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None

    def load(self, name: str, tensor: torch.Tensor) -> None:
        if name == "weight":  # unquantized checkpoint: round-to-nearest on load
            from edgeserve_pod.quant.rtn import quantize_rtn

            if tuple(tensor.shape) != (self.out_features, self.in_features):
                raise ValueError(f"W4A16Linear.weight: expected {(self.out_features, self.in_features)}, got {tuple(tensor.shape)}")
            q = quantize_rtn(tensor.to(self.qweight.device, torch.float32), self.group_size)
            tensors = {"qweight": q.qweight, "scales": q.scales, "zeros": q.zeros}
            for k, v in tensors.items():
                super().load(k, v)
            return
        if name in ("qweight", "scales", "zeros"):
            want = getattr(self, name).dtype
            if tensor.dtype != want:
                raise ValueError(f"W4A16Linear.{name}: expected dtype {want}, got {tensor.dtype}")
        super().load(name, tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = w4a16_matmul(x, self.qweight, self.scales, self.zeros, self.group_size)
        return y + self.bias if self.bias is not None else y


class W4A16LinearFactory(LinearFactory):
    name = "w4a16"

    def __init__(self, dtype: torch.dtype, device: torch.device, group_size: int = GROUP_SIZE):
        self.dtype = dtype
        self.device = device
        self.group_size = group_size

    def make(self, in_features: int, out_features: int, bias: bool = False) -> LinearBase:
        return W4A16Linear(in_features, out_features, bias, self.dtype, self.device, self.group_size)
