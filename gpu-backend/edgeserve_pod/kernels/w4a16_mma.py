"""W4A16 GEMM in CUDA C++ (csrc/w4a16_mma.cu) for decode and small batches (M <= 64): tensor cores
fed from registers.

The kernels:
- `swap_matmul`: what the engine runs at M <= 8, and at M = 17-64 on the layers where the Triton
  configs are weak (layers/linear_w4a16.py: decode_kernel picks the launch per layer shape and M).
  Swapped operands: the weights are the mma's A operand (no mma row wasted on them), x the B
  operand (MT = ceil(M / 8) n-tiles of 8 rows). It reads the Triton kernel's own qweight / scales /
  zeros (no second copy): 16 x 16-word blocks staged per warp by cp.async, each lane picks its 8
  words. Two ways to bring x: a staged K slice per CTA that its nt column tiles share (M <= 8 and
  the bench's M <= 64 variants), or `stream_x`: a CTA-wide ring of 128-k blocks (8 < M <= 64), with
  the scale folded into the A fragment. K splits across ks CTAs meet in a persistent fp32 workspace
  (the last CTA of a column group converts and re-zeroes it). H100, vs cuBLAS bf16 in the same run
  (bench/results/quant/2026-11-23-h100-swapx-wg.json, `python bench/quant_gemm.py --mma`), 8B
  shapes: M = 1 2.02-2.41x (the tuned Triton kernel 1.75-2.26x); M = 2-8 on the wide layers
  2.12-2.55x vs 1.58-1.97x; M = 24-64 on the fused layers (6144, 28672) 0.64-1.53x vs 0.32-0.77x.
  Its own 16-byte-per-lane layout (a one-time repack) was ~10% faster at M = 1 (2.38-3.08x,
  2026-11-23-h100-swap.json) but the Triton kernel (prefill) read it at 0.15-0.8x its own speed,
  so the engine keeps one layout and that variant was dropped (commit 8db027f has it).
- `wg_matmul` (sm_90 only, built as sm_90a): warpgroup MMA (wgmma m64nNk16, N = 8 MT) with the
  dequantized weights as register A fragments and x read by the tensor cores from shared memory;
  the engine runs it for the widest layers (fused gate|up) past M = 16 on an H100: 1.11-1.53x
  cuBLAS at M = 24-64 vs 0.32-0.77x for Triton.
  Past M = 16 none of these reaches the weight-read limit (3.6-5x cuBLAS): they are bound by
  instruction issue (ncu: ~0.5 issued per cycle per scheduler, 17-27% of DRAM bandwidth).
- `mma_matmul` (x is the mma's A operand, 16 rows of which M are real): at M = 1 within ~4% of the
  tuned Triton kernel (2026-11-23-h100-mma.json); issue-latency-bound at 2 warps per scheduler.
  Not used by the engine; kept as the measured baseline of the bench's --mma section.

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
import functools
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

MAX_M = 16  # mma_matmul: one 16-row mma tile
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


def _magic_zeros(zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(G, N) integer zero points -> (G, N) int32 holding MAGIC + z in both 16-bit halves (exact)."""
    half = (zeros.to(torch.float32) + MAGIC[dtype]).to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF
    zc = half | (half << 16)
    return torch.where(zc >= 2**31, zc - 2**32, zc).to(torch.int32).contiguous()


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
        return cls(repack_mma(_codes_padded(qweight)), _magic_zeros(zeros, dtype), scales.to(torch.float32).contiguous(),
                   dtype, group_size, in_features)

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
        # sm_90 builds the arch-specific target (sm_90a): the warpgroup-MMA kernel needs it
        target = ["-gencode", "arch=compute_90a,code=sm_90a"] if arch == "sm_90" else [f"-arch={arch}"]
        cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", *target, "-o", tmp, SRC]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{p.stderr[-4000:]}")
        os.replace(tmp, lib)
    dll = ctypes.CDLL(lib)
    fn = dll.edgeserve_w4a16_mma  # see the .cu's extern "C" functions
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 10 + [ctypes.c_void_p]
    for fn in (dll.edgeserve_w4a16_swap, dll.edgeserve_w4a16_swapx):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int] * 11 + [ctypes.c_void_p]
    fn = dll.edgeserve_w4a16_wg
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int] * 10 + [ctypes.c_void_p]
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


def _prepare(x: torch.Tensor, k: int, aligned: bool = False):
    """-> (the built library, x's leading shape, x as (M, K) rows with unit stride (and 4-byte
    aligned rows when `aligned`))."""
    lib = _lib()
    if lib is None:
        raise RuntimeError(f"the W4A16 mma kernel is unavailable: {_LIB.get('error')}")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1 or (aligned and (x2.stride(0) % 2 or x2.data_ptr() % 4)):
        x2 = x2.contiguous()
    return lib, x.shape[:-1], x2


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
    lib, lead, x2 = _prepare(x, k, aligned=True)
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


# ------------------------------------------- swapped-operand kernel on the Triton layout (M <= 64)

SWAP_MAX_M = 64  # rows of x the swap kernel takes (MT = ceil(M / 8) mma n-tiles of 8 rows)
# (n-tiles per CTA, warps per n-tile) built in the .cu (launch_swap_mt): decode batches (M <= 16) and
# 16 < M <= 64, where wider CTAs share the larger x slice
SWAP_VARIANTS_DECODE = ((1, 4), (1, 8), (1, 16), (2, 4), (4, 2), (4, 4), (8, 2))
SWAP_VARIANTS_WIDE = ((4, 2), (4, 4), (8, 1), (8, 2), (16, 1))
SWAP_WS_COLS = 1 << 17  # workspace columns (N) per device: allocated once, so CUDA graphs keep valid pointers
_SWAP_WS: dict = {}  # device -> (fp32 (SWAP_MAX_M, SWAP_WS_COLS) zeros, int32 counters zeros)


# the streamed-x kernel (w4a16_swapx_kernel), 8 < M <= 64: x through a D-stage ring per CTA
SWAPX_VARIANTS = ((2, 2), (4, 1), (4, 2), (8, 1), (8, 2), (16, 1))
SWAPX_D = 3


def swap_variants(m: int, stream_x: bool = False) -> tuple[tuple[int, int], ...]:
    """The (nt, wk) launches built for M rows."""
    if stream_x:
        return SWAPX_VARIANTS if 8 < m <= SWAP_MAX_M else ()
    return SWAP_VARIANTS_DECODE if m <= 16 else SWAP_VARIANTS_WIDE


def _swap_ws(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ws = _SWAP_WS.get(device)
    if ws is None:
        ws = _SWAP_WS[device] = (torch.zeros(SWAP_MAX_M, SWAP_WS_COLS, dtype=torch.float32, device=device),
                                  torch.zeros(SWAP_WS_COLS // 16, dtype=torch.int32, device=device))
    return ws


def _triton_operands(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                     group_size: int, cols: int, what: str):
    """Checks shared by the kernels on the Triton layout; cols: output columns per CTA (N % cols).
    -> (library, x's leading shape, x as (M, K) rows, M, N, K, Kp)."""
    if x.dtype not in MAGIC:
        raise ValueError(f"the {what} kernel takes bf16/fp16 activations, got {x.dtype}")
    kw, n = qweight.shape
    k = x.shape[-1]
    if n % cols or group_size % IB or kw * PACK != padded_k(k) or n > SWAP_WS_COLS:
        raise ValueError(f"qweight {tuple(qweight.shape)} / group {group_size} / {cols} columns per CTA do not fit "
                         f"x (..., {k})")
    if scales.dtype != torch.float16 or zeros.dtype != torch.uint8:
        raise ValueError(f"scales must be float16 and zeros uint8, got {scales.dtype}, {zeros.dtype}")
    lib, lead, x2 = _prepare(x, k)
    return lib, lead, x2, x2.shape[0], n, k, kw * PACK


def launch_key(*pick) -> str:
    """The bench's and the engine table's name of a launch: "nt x wk x ks" ("s" prefixed for
    streamed x), or "wg" + warpgroups x ks for the warpgroup-MMA kernel."""
    if pick[0] == "wg":
        return f"wg{pick[1]}x{pick[2]}"
    nt, wk, ks, *sx = pick
    return f"{'s' if sx and sx[0] else ''}{nt}x{wk}x{ks}"


# the warpgroup-MMA kernel (w4a16_wg_kernel, sm_90a): 8 < M <= 64, wg warpgroups of 64 columns per CTA
WG_VARIANTS = (1, 2, 4)
WG_D = 4


@functools.lru_cache(maxsize=None)
def wg_supported() -> bool:
    """The warpgroup-MMA kernel runs on sm_90 (built as sm_90a) only."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def wg_smem_bytes(m: int, wg: int) -> int:
    mt = -(-m // 8)
    front = max(WG_D * mt * 16 * 128, 4 * wg * 8 * mt * 16 * 4)
    return -(-front // 128) * 128 + 4 * wg * WG_D * 16 * 20 * 4


def wg_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
              wg: int = 2, ks: int = 1, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) bf16/fp16, 9 to 64 rows, on the Triton layout's operands -> (..., N) by warpgroup
    MMA (H100): CTAs of wg x 64 columns, ks K slices through the workspace. N % (64 wg) == 0."""
    if wg not in WG_VARIANTS:
        raise ValueError(f"wg must be one of {WG_VARIANTS}, got {wg}")
    if not wg_supported():
        raise RuntimeError("the wgmma kernel needs an sm_90 GPU")
    lib, lead, x2, m, n, k, kp = _triton_operands(x, qweight, scales, zeros, group_size, 64 * wg, "wgmma")
    if not 8 < m <= SWAP_MAX_M:
        raise ValueError(f"the wgmma kernel takes 8 < M <= {SWAP_MAX_M} rows, got {m}")
    ks = max(1, min(ks, kp // IB))
    ws, cnt = _swap_ws(x.device)
    y = out if out is not None else torch.empty((m, n), device=x.device, dtype=x.dtype)
    err = lib.edgeserve_w4a16_wg(x2.data_ptr(), qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), y.data_ptr(),
                                 ws.data_ptr(), cnt.data_ptr(), m, n, k, kp, x2.stride(0), y.stride(0),
                                 group_size // IB, int(x.dtype == torch.bfloat16), wg, ks,
                                 torch.cuda.current_stream(x.device).cuda_stream)
    if err:
        raise RuntimeError(f"W4A16 wgmma kernel launch failed: cudaError {err}")
    return y.view(*lead, n)


def swap_smem_bytes(m: int, kp: int, nt: int, wk: int, ks: int, stream_x: bool = False) -> int:
    """Mirrors launch_swap_one / launch_swapx_one: the x slice or x ring (later the reduction tile
    over it) + the weight rings."""
    mt = -(-m // 8)
    if stream_x:
        depth, xb = SWAPX_D, SWAPX_D * m * (wk * IB + 8) * 2
    else:
        depth, xb = 2, m * (-(-(kp // IB) // ks) * IB + 8) * 2
    front = max(xb, nt * wk * 8 * mt * 16 * 4)
    return -(-front // 16) * 16 + nt * wk * depth * 16 * 20 * 4


def swap_matmul(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                group_size: int, nt: int = 4, wk: int = 4, ks: int = 2, stream_x: bool = False,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) bf16/fp16, at most 64 rows, on the Triton layout's operands -> (..., N): CTAs of nt
    16-column tiles share one staged slice of x (stream_x: x streamed through a ring, 8 < M <= 64);
    ks K slices add up through a persistent fp32 workspace (left zeroed). N % (16 nt) == 0."""
    lib, lead, x2, m, n, k, kp = _triton_operands(x, qweight, scales, zeros, group_size, 16 * nt, "swap")
    if m > SWAP_MAX_M:
        raise ValueError(f"the swap kernel takes M <= {SWAP_MAX_M} rows, got {m}")
    if m and (nt, wk) not in swap_variants(m, stream_x):
        raise ValueError(f"(nt, wk) must be one of {swap_variants(m, stream_x)} at M={m}"
                         f"{' (stream_x)' if stream_x else ''}, got {(nt, wk)}")
    ks = max(1, min(ks, kp // IB))
    limit = SMEM_LIMIT if torch.cuda.get_device_capability()[0] >= 9 else 163 * 1024
    if swap_smem_bytes(m, kp, nt, wk, ks, stream_x) > limit:
        raise ValueError(f"M={m}, Kp={kp}, ks={ks} needs {swap_smem_bytes(m, kp, nt, wk, ks, stream_x)} B of shared memory")
    ws, cnt = _swap_ws(x.device)
    y = out if out is not None else torch.empty((m, n), device=x.device, dtype=x.dtype)
    if m == 0:
        return y.view(*lead, n)
    fn = lib.edgeserve_w4a16_swapx if stream_x else lib.edgeserve_w4a16_swap
    err = fn(x2.data_ptr(), qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), y.data_ptr(),
             ws.data_ptr(), cnt.data_ptr(), m, n, k, kp, x2.stride(0), y.stride(0),
             group_size // IB, int(x.dtype == torch.bfloat16), nt, wk, ks,
             torch.cuda.current_stream(x.device).cuda_stream)
    if err:
        raise RuntimeError(f"W4A16 swap kernel launch failed: cudaError {err}")
    return y.view(*lead, n)
