"""W4A16 linear layers: 4-bit group-quantized weights (kernels/w4a16.py layout), 16-bit
activations. On CUDA the Triton kernel runs (config chosen by M); elsewhere the torch
dequantize-then-matmul reference, so CPU tests exercise the same tensors.

Small batches on CUDA (at most SWAP_CUDA_MAX_M rows: decode) run the swapped-operand CUDA
kernel (kernels/w4a16_mma.py: the weights as the mma's A operand), reading these same tensors;
larger ones the Triton kernel. Without nvcc, or with EDGESERVE_W4A16_KERNEL=triton, the Triton
kernel serves every M.

Loading: a quantized checkpoint (quant/checkpoint.py) hands over `qweight`, `scales`, `zeros`
per projection; fused projections (q|k|v, gate|up) arrive concatenated along N, which is the
last dimension of all three. A plain `weight` (a bf16 checkpoint) is quantized on load by
round-to-nearest, so `--quantization w4a16` also runs from an unquantized folder.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeserve_pod.kernels import w4a16_mma as MMA
from edgeserve_pod.kernels.w4a16 import IB, PACK, padded_k, w4a16_matmul
from edgeserve_pod.layers.linear_base import LinearBase, LinearFactory

GROUP_SIZE = 128
# rows the CUDA kernel serves. On the layer's own (Triton) layout it is 1.10-1.19x faster than the
# Triton kernel at M = 1 and 1.17-1.35x at M = 2 on the 8B shapes, and mixed from M = 4 on (it
# stages M x K of x per 16 output columns): bench/results/quant/2026-11-23-h100-swap-tl.json
SWAP_CUDA_MAX_M = 2


def swap_schedule(n: int, k: int) -> tuple[int, int]:
    """(depth, warps per 16 columns) of the CUDA kernel, from the same sweep at M = 1, 2: long K or
    narrow N splits K over 16 warps, wide N keeps 4 warps per 16 columns, the rest 8."""
    if k >= 8192 or n <= 4096:
        return 2, 16
    if n >= 12288:
        return 2, 4
    return 2, 8


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
        # the CUDA kernel's conditions that do not change per call (availability is checked per call:
        # it builds the kernel once, on first use)
        self.dtype = dtype
        self.cuda_kernel_ok = dtype in MMA.MAGIC and out_features % 16 == 0
        self.schedule = swap_schedule(out_features, in_features)

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
        if (self.cuda_kernel_ok and x.is_cuda and x.dtype == self.dtype
                and x.numel() <= SWAP_CUDA_MAX_M * self.in_features and MMA.available()):
            y = MMA.swap_matmul_triton_layout(x, self.qweight, self.scales, self.zeros, self.group_size, *self.schedule)
        else:
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
