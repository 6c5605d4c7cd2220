"""W4A16 linear layers: 4-bit group-quantized weights (kernels/w4a16.py layout), 16-bit
activations. On CUDA the Triton kernel runs (config chosen by M); elsewhere the torch
dequantize-then-matmul reference, so CPU tests exercise the same tensors.

Small batches on CUDA (decode: at most CUDA_MAX_M rows) run a CUDA kernel (kernels/w4a16_mma.py,
launch chosen by `decode_kernel`) that reads these same tensors; larger ones the Triton kernel.
Without nvcc, or with EDGESERVE_W4A16_KERNEL=triton, the Triton kernel serves every M.

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
# Decode batches (M <= CUDA_MAX_M) run the swapped-operand CUDA kernels (kernels/w4a16_mma.py) on the
# layer's own Triton-layout tensors where they beat the tuned Triton kernel, launched per (M, N, K) as
# below, from the H100 sweeps of bench/quant_gemm.py --mma against the Triton kernel in the same run
# (bench/results/quant/2026-11-23-h100-group.json for M <= 8, 2026-11-23-h100-swapx.json above):
# - M = 1 (and M = 2 off the widest layer): one 16-column tile per CTA, no K split: 1.10-1.19x Triton;
#   the widest (fused gate|up, 28672) two tiles: 2.56-2.71x cuBLAS against 2.20-2.28x with one
#   (three runs of 2026-11-23);
# - M = 2-8 on wide N (14336, 28672): 4-8 tiles share one staged x, 1.24-1.37x Triton; long K
#   (14336): 4-8 tiles and 8 K slices, 1.09-1.15x; on the narrow short layers (4096 x 4096, 6144)
#   M = 3-4 keep one tile per CTA and M = 5-8 go to Triton (all within ~5%);
# - M = 9-16: the Triton kernel (the CUDA kernels were within +-5% of it);
# - M = 17-64, streamed x, where the Triton configs are weak: the fused projections (tuned for the
#   decode step only) 1.2-3.2x faster than on Triton (N 6144: 20.7 vs 35.6 us at M = 24, 29.8 vs
#   71.8 at 48, 34.4 vs 45.5 at 64; N 28672: 59.3 vs 142.7, 84.6 vs 274.8, 89.5 vs 110.5); N 14336
#   1.04-1.26x; long K (14336) past M = 32 1.01-1.28x; 4096 x 4096 and long K up to 32 stay on Triton;
# - on an H100 the widest (N >= 24576: fused gate|up) at M = 17-64 run the warpgroup-MMA kernel
#   instead: 59.3 vs 62.2 us (streamed x) at M = 32, 77.7 vs 88.5 at M = 64.
CUDA_MAX_M = 64


def decode_kernel(m: int, n: int, k: int, hopper: bool = False) -> tuple | None:
    """(column tiles per CTA, warps per tile, K slices[, streamed x]) of the CUDA kernel,
    ("wg", warpgroups per CTA, K slices) for the warpgroup-MMA kernel (`hopper`: an sm_90 GPU), or
    None (Triton)."""
    if m < 1 or m > CUDA_MAX_M or n % 16:
        return None
    wide, long_k = n >= 12288, k >= 8192
    if m > 16:
        if hopper and n >= 24576 and not long_k and n % 256 == 0:
            return "wg", 4, 1
        if long_k:
            pick = (8, 2, 4, True) if m > 32 else None
        elif n <= 4096:
            pick = None
        elif n >= 24576:
            pick = (8, 1, 1, True) if m <= 32 else (16, 1, 1, True)
        elif wide:
            pick = (8, 2, 1, True)
        else:
            pick = (4, 1, 4, True)
        return pick if pick and n % (16 * pick[0]) == 0 else None
    if m > 8:
        return None
    if m == 1 or (m == 2 and n < 24576) or (m <= 4 and not wide and not long_k):
        if long_k or n <= 4096:
            return 1, 16, 1
        if m == 1 and n >= 24576 and n % 32 == 0:
            return 2, 4, 1
        return (1, 4, 1) if wide else (1, 8, 1)
    if wide and n % 128 == 0:
        return (8, 2, 1) if n >= 24576 else (4, 4, 1)
    if long_k:  # a launch of nt column tiles needs N % (16 nt) == 0
        if m <= 4 and n % 64 == 0:
            return 4, 2, 8
        if m > 4 and n % 128 == 0:
            return 8, 2, 8
    return None


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
        self.cuda_kernel_ok = dtype in MMA.MAGIC  # and decode_kernel() picks one for the call's M

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
        kern = None
        if self.cuda_kernel_ok and x.is_cuda and x.dtype == self.dtype and x.numel() <= CUDA_MAX_M * self.in_features:
            kern = decode_kernel(x.numel() // self.in_features, self.out_features, self.in_features,
                                 MMA.wg_supported())
            if kern is not None and not MMA.available():
                kern = None
        if kern is None:
            y = w4a16_matmul(x, self.qweight, self.scales, self.zeros, self.group_size)
        elif kern[0] == "wg":
            y = MMA.wg_matmul(x, self.qweight, self.scales, self.zeros, self.group_size, *kern[1:])
        else:
            y = MMA.swap_matmul(x, self.qweight, self.scales, self.zeros, self.group_size, *kern)
        return y + self.bias if self.bias is not None else y


class W4A16LinearFactory(LinearFactory):
    name = "w4a16"

    def __init__(self, dtype: torch.dtype, device: torch.device, group_size: int = GROUP_SIZE):
        self.dtype = dtype
        self.device = device
        self.group_size = group_size

    def make(self, in_features: int, out_features: int, bias: bool = False) -> LinearBase:
        return W4A16Linear(in_features, out_features, bias, self.dtype, self.device, self.group_size)
