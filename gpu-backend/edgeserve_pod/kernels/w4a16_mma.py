"""W4A16 GEMM in CUDA C++ (csrc/w4a16_mma.cu) for M <= 16: tensor cores fed from registers.

Status: an experiment, measured and kept, NOT used by the engine (layers/linear_w4a16.py runs the
Triton kernel). On the H100 (bench/results/quant/2026-11-23-h100-mma.json), at M = 1 its best
variant vs the tuned Triton kernel, K x N: 9.0 vs 9.3 us on 4096 x 4096, 21.1 vs 21.7 on
4096 x 14336, 19.4 vs 19.9 on 14336 x 4096 (2.5-4.0% faster), 12.5 vs 11.8 on 4096 x 6144
(+6.5%) and 38.5 vs 35.7 on 4096 x 28672 (+7.7%); the default schedule (3x8, the metrics'
values) took 8.9, 27.0, 19.7, 14.6 and 46.5 us on those shapes. At M = 16 the best variant is
1.5-1.7x slower than Triton, where each 32-column CTA reads all of x (x traffic from L2 is
twice the weight bytes). ncu (2026-11-23-h100-mma-ncu.log): issue-latency-bound at 2 warps per
scheduler. Next steps: warps that split N and share one staged x, and more warps per SM; see the
closing note of issue 7.

Why a CUDA kernel beside the Triton one (w4a16.py): Triton's tl.dot takes its B operand through
shared memory, so every dequantized tile makes a round trip there. Here the weights are repacked
once so that each lane's 128-bit word group holds exactly the mma.m16n8k16 B fragments it
multiplies (2 k-steps x 4 n-tiles); dequantization is 4 lop3 + 4 sub.x2 per word, in registers,
and each 128-k block's partial product is scaled in fp32 (exact q - z, no bf16 rounding of the
weight). Codes, A fragments, zeros and scales stream through a per-warp cp.async pipeline.
Layout and arithmetic are documented in the .cu file.

Operands (`MmaWeights`, from the Triton-layout qweight / scales / zeros by `MmaWeights.from_triton`):
    qw  (N/32, Kp/32, 32, 4) int32   codes, fragment order (`repack_mma`)
    zc  (G, N) int32                 (MAGIC + zero) twice, as 16-bit values of the activation dtype
                                     (bf16: 128 + z, fp16: 1024 + z; exact): one sub.x2 operand
    sc  (G, N) float32               scales
Needs N % 32 == 0 and an even K; `supported()` says whether a layer qualifies.

Build: nvcc compiles the .cu into a shared library under $EDGESERVE_CACHE (default
~/.cache/edgeserve) the first time it is needed, named by the source hash and the GPU's
architecture; it is called through ctypes on torch's current stream (CUDA-graph capturable).
No nvcc, no CUDA device, or a failed build: `available()` is False with the reason in
`unavailable_reason()`, and callers use the Triton kernel. On CPU, `mma_reference` (dequantize
from this layout, matmul in float32) is the path, and the layout is tested against the Triton
layout in CI.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

import torch

from edgeserve_pod.kernels.w4a16 import IB, PACK, padded_k

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "w4a16_mma.cu")
NB = 32  # output columns per CTA (4 mma n-tiles of 8)
MAGIC = {torch.bfloat16: 128.0, torch.float16: 1024.0}

MAX_M = 16  # one 16-row mma tile; larger batches go to the Triton kernel
# (max M, D = cp.async pipeline stages of 128-k blocks per warp, WK = warps splitting K); H100
# sweep in bench/quant_gemm.py --mma
DEFAULT_SCHEDULE = ((8, 3, 8), (16, 3, 8))


# ------------------------------------------------------------------------------- layout (torch)

def _codes_padded(qweight: torch.Tensor) -> torch.Tensor:
    """Triton-layout qweight (Kp/8, N) int32 -> codes (N, Kp) int64 (padding codes included)."""
    kw, n = qweight.shape
    shifts = (torch.arange(PACK, device=qweight.device, dtype=torch.int32) * 4).view(1, PACK, 1, 1)
    w = qweight.view(kw // (IB // PACK), 1, IB // PACK, n)
    return ((w >> shifts) & 0xF).reshape(kw * PACK, n).t().to(torch.int64)


def repack_mma(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, Kp) in [0, 15], N % 32 == 0, Kp % 32 == 0 -> (N/32, Kp/32, 32, 4) int32.

    Column n = 32 nb + 8 (2 tp + tt) + r, row k = 32 kp + 16 sh + 8 h + 2 c + e goes to lane
    4 r + c, word 2 sh + tp, nibble 4 e + 2 tt + h: so lop3 of (word >> 4 i), i = 0..3, gives the
    (k, k + 1) pairs of B fragment (i % 2) of n-tile 2 tp + i // 2 for k-step 2 kp + sh."""
    n, kp = codes.shape
    if n % NB or kp % 32:
        raise ValueError(f"repack_mma needs N % 32 == 0 and Kp % 32 == 0, got {(n, kp)}")
    c = codes.to(torch.int64).view(n // NB, 2, 2, 8, kp // 32, 2, 2, 4, 2)  # nb tp tt r | kp sh h c e
    c = c.permute(0, 4, 3, 7, 5, 1, 8, 2, 6)  # nb kp r c sh tp | e tt h
    c = c.reshape(n // NB, kp // 32, 32, 4, 8)
    shifts = torch.arange(8, device=codes.device, dtype=torch.int64) * 4
    packed = (c << shifts).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_mma(qw: torch.Tensor) -> torch.Tensor:
    """Inverse of repack_mma: (N/32, Kp/32, 32, 4) int32 -> codes (N, Kp) int64."""
    nbk, kpk = qw.shape[:2]
    shifts = torch.arange(8, device=qw.device, dtype=torch.int64) * 4
    c = (qw.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF  # nb kp lane word nibble
    c = c.view(nbk, kpk, 8, 4, 2, 2, 2, 2, 2)  # nb kp r c sh tp e tt h
    c = c.permute(0, 5, 7, 2, 1, 4, 8, 3, 6)  # nb tp tt r kp sh h c e
    return c.reshape(nbk * NB, kpk * 32)


@dataclass
class MmaWeights:
    qw: torch.Tensor  # (N/32, Kp/32, 32, 4) int32
    zc: torch.Tensor  # (G, N) int32: (MAGIC + zero) in both 16-bit halves
    sc: torch.Tensor  # (G, N) float32
    dtype: torch.dtype  # the activation dtype the operands were made for
    group_size: int
    in_features: int

    @property
    def out_features(self) -> int:
        return self.qw.shape[0] * NB

    @classmethod
    def from_triton(cls, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                    in_features: int, dtype: torch.dtype) -> "MmaWeights":
        if dtype not in MAGIC:
            raise ValueError(f"the mma kernel takes bf16/fp16 activations, got {dtype}")
        if padded_k(in_features) != qweight.shape[0] * PACK:
            raise ValueError(f"qweight has {qweight.shape[0]} word rows, K={in_features} needs {padded_k(in_features) // PACK}")
        qw = repack_mma(_codes_padded(qweight))
        half = (zeros.to(torch.float32) + MAGIC[dtype]).to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF
        zc = half | (half << 16)
        zc = torch.where(zc >= 2**31, zc - 2**32, zc).to(torch.int32).contiguous()
        return cls(qw, zc, scales.to(torch.float32).contiguous(), dtype, group_size, in_features)

    def zeros_f32(self) -> torch.Tensor:
        """(G, N) float32 integer zero points, read back from zc's low halves."""
        lo = (self.zc.to(torch.int64) & 0xFFFF).to(torch.int32)
        lo = torch.where(lo >= 2**15, lo - 2**16, lo).to(torch.int16)
        return lo.view(self.dtype).to(torch.float32) - MAGIC[self.dtype]

    def dequantize(self) -> torch.Tensor:
        """-> W (N, K) float32, (q - z) * s: the reference of this layout."""
        q = unpack_mma(self.qw)[:, :self.in_features].to(torch.float32)
        g = torch.arange(self.in_features, device=q.device) // self.group_size
        z = self.zeros_f32()
        return (q - z.t()[:, g]) * self.sc.t()[:, g]


def supported(in_features: int, out_features: int, group_size: int) -> bool:
    return out_features % NB == 0 and in_features % 2 == 0 and group_size % IB == 0


def mma_reference(x: torch.Tensor, w: MmaWeights) -> torch.Tensor:
    return (x.to(torch.float32) @ w.dequantize().t()).to(x.dtype)


# ----------------------------------------------------------------------------------- build

_LOCK = threading.Lock()
_LIB: dict = {}  # "lib" -> ctypes.CDLL or "error" -> str


def _arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def _build() -> ctypes.CDLL:
    nvcc = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else None)
    if nvcc is None or not os.path.exists(nvcc):
        raise RuntimeError("nvcc not found (PATH / CUDA_HOME)")
    src = open(SRC, "rb").read()
    arch = _arch()
    if int(arch[3:]) < 80:
        raise RuntimeError(f"mma.m16n8k16 bf16 needs sm_80 or newer, this GPU is {arch}")
    tag = hashlib.sha256(src + arch.encode()).hexdigest()[:16]
    cache = os.environ.get("EDGESERVE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "edgeserve"))
    os.makedirs(cache, exist_ok=True)
    lib = os.path.join(cache, f"w4a16_mma-{tag}.so")
    if not os.path.exists(lib):
        tmp = f"{lib}.{os.getpid()}.tmp"
        cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", "-o", tmp, SRC]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{p.stderr[-4000:]}")
        os.replace(tmp, lib)
    dll = ctypes.CDLL(lib)
    fn = dll.edgeserve_w4a16_mma
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 10 + [ctypes.c_void_p]  # see the .cu's extern "C"
    return dll


def _lib() -> ctypes.CDLL | None:
    with _LOCK:
        if not _LIB and os.environ.get("EDGESERVE_W4A16_KERNEL", "auto") != "triton":
            try:
                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA device")
                _LIB["lib"] = _build()
            except Exception as e:  # noqa: BLE001 - the reason is kept and reported
                _LIB["error"] = str(e)
        elif not _LIB:
            _LIB["error"] = "EDGESERVE_W4A16_KERNEL=triton"
        return _LIB.get("lib")


def available() -> bool:
    return _lib() is not None


def unavailable_reason() -> str | None:
    return None if _lib() is not None else _LIB.get("error")


SMEM_LIMIT = 227 * 1024  # bytes of shared memory one CTA may opt into (sm_90; sm_80: 163 KiB)


def smem_bytes(m: int, depth: int, wk: int) -> int:
    """Shared memory of one CTA: wk warps x depth stages of (codes 2 KiB, A fragments, zeros,
    scales) + the reduction tile; mirrors Stage<AW> in the .cu."""
    aw = 4 if m > 8 else 2
    stage = 4 * 32 * 16 + 8 * aw * 32 * 4 + 4 * 32 * 4 + 4 * 32 * 8
    return wk * depth * stage + (16 if m > 8 else 8) * 32 * 4


def fits(m: int, depth: int, wk: int) -> bool:
    limit = SMEM_LIMIT if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9 else 163 * 1024
    return smem_bytes(m, depth, wk) <= limit


def schedule_for(m: int, schedule=DEFAULT_SCHEDULE) -> tuple[int, int]:
    for max_m, depth, wk in schedule:
        if m <= max_m:
            return depth, wk
    raise ValueError(f"the mma kernel takes M <= {MAX_M} rows, got {m}")


def mma_matmul(x: torch.Tensor, w: MmaWeights, depth: int | None = None, wk: int | None = None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) bf16/fp16 on CUDA, at most 16 rows -> (..., N). depth/wk override the schedule
    (for the sweep)."""
    k = x.shape[-1]
    if k != w.in_features:
        raise ValueError(f"x has K={k}, the weights {w.in_features}")
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype}, the weights were prepared for {w.dtype}")
    lib = _lib()
    if lib is None:
        raise RuntimeError(f"the W4A16 mma kernel is unavailable: {_LIB.get('error')}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1 or x2.stride(0) % 2 or x2.data_ptr() % 4:
        x2 = x2.contiguous()
    m, n = x2.shape[0], w.out_features
    if m > MAX_M:
        raise ValueError(f"the mma kernel takes M <= {MAX_M} rows, got {m}")
    if depth is None or wk is None:
        depth, wk = schedule_for(m)
    if not fits(m, depth, wk):
        raise ValueError(f"depth {depth} x {wk} warps needs {smem_bytes(m, depth, wk)} B of shared memory at M={m}")
    y = out if out is not None else torch.empty((m, n), device=x.device, dtype=x.dtype)
    err = lib.edgeserve_w4a16_mma(x2.data_ptr(), w.qw.data_ptr(), w.sc.data_ptr(), w.zc.data_ptr(), y.data_ptr(),
                                  m, n, k, w.qw.shape[1] * 32, x2.stride(0), y.stride(0), w.group_size // IB,
                                  int(x.dtype == torch.bfloat16), depth, wk, torch.cuda.current_stream(x.device).cuda_stream)
    if err:
        raise RuntimeError(f"W4A16 mma kernel launch failed: cudaError {err}")
    return y.view(*lead, n)
