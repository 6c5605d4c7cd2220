"""Meta-parameters of the W4A16 kernel, chosen by M at run time.

`CANDIDATES[key]` is the search space that `bench/quant_gemm.py` sweeps on the GPU; `TUNED`
holds, per (tuning key, N, K), the fastest config of that sweep that also passed the
correctness check (H100, CUDA-graph replay). A shape not in the table gets the key's default.
"""

from __future__ import annotations


def _cfg(bm, bn, split, dot, warps, stages, reduce="last", group_m=8):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_K": split, "USE_DOT": dot, "REDUCE": reduce,
            "num_warps": warps, "num_stages": stages, "GROUP_M": group_m}


def path_for(m: int) -> str:
    """The three paths: GEMV-style for decode batches, split-K in the middle, GEMM for prefill."""
    if m <= 16:
        return "gemv"
    if m < 64:
        return "splitk"
    return "gemm"


_RED = ("last", "atomic")

CANDIDATES: dict[str, list[dict]] = {  # "gemm64" sweeps the "gemm" list
    # M == 1: the CUDA-core path (BLOCK_M = 1) and the 16-row tensor-core tile
    "gemv1": [_cfg(1, bn, sk, False, w, st, r) for bn in (32, 64, 128) for sk in (4, 8, 16)
              for w, st in ((4, 3), (4, 5), (8, 4)) for r in _RED]
             + [_cfg(1, bn, 1, False, w, st) for bn in (16, 32) for w, st in ((4, 4), (2, 6))]
             + [_cfg(16, bn, sk, True, 4, st, "last") for bn in (32, 64, 128) for sk in (4, 8, 16) for st in (3, 5)],
    "gemv": [_cfg(16, bn, sk, True, w, st, r) for bn in (32, 64, 128) for sk in (2, 4, 8, 16)
             for w, st in ((4, 3), (4, 5)) for r in _RED],
    "splitk": [_cfg(32, bn, sk, True, w, st, r) for bn in (64, 128) for sk in (2, 4, 8)
               for w, st in ((4, 3), (8, 4)) for r in _RED] + [_cfg(32, 64, 1, True, 4, 4)],
    "gemm": [_cfg(bm, bn, sk, True, w, st) for bm in (64, 128) for bn in (64, 128, 256)
             for sk in (1, 2, 4) for w, st in ((4, 3), (8, 3), (8, 4))],
}
CANDIDATES["gemm64"] = CANDIDATES["gemm"]

DEFAULT: dict[str, dict] = {
    "gemv1": _cfg(1, 32, 8, False, 4, 3),
    "gemv": _cfg(16, 64, 8, True, 4, 3),
    "splitk": _cfg(32, 64, 4, True, 4, 3),
    "gemm64": _cfg(64, 128, 2, True, 4, 3),
    "gemm": _cfg(64, 128, 2, True, 4, 3),
}

# (tuning key, N, K) -> the fastest config that passed the correctness check, from
# bench/results/quant/2026-11-22-h100-sweep.json (H100, CUDA-graph replay; time at that M).
TUNED: dict[tuple[str, int, int], dict] = {
    ('gemv1', 4096, 4096): _cfg(1, 32, 8, False, 4, 3, 'last'),  # M=1: 9.1 us
    ('gemv', 4096, 4096): _cfg(16, 128, 16, True, 4, 3, 'atomic'),  # M=16: 15.4 us
    ('splitk', 4096, 4096): _cfg(32, 128, 8, True, 4, 3, 'atomic'),  # M=32: 20.6 us
    ('gemm64', 4096, 4096): _cfg(64, 64, 4, True, 4, 3, 'last'),  # M=64: 24.6 us
    ('gemm', 4096, 4096): _cfg(64, 128, 2, True, 4, 3, 'last'),  # M=256: 53.9 us
    ('gemv1', 14336, 4096): _cfg(1, 32, 8, False, 4, 3, 'last'),  # M=1: 22.2 us
    ('gemv', 14336, 4096): _cfg(16, 128, 8, True, 4, 3, 'atomic'),  # M=16: 35.3 us
    ('splitk', 14336, 4096): _cfg(32, 128, 2, True, 4, 3, 'last'),  # M=32: 59.3 us
    ('gemm64', 14336, 4096): _cfg(64, 128, 2, True, 4, 3, 'last'),  # M=64: 56.9 us
    ('gemm', 14336, 4096): _cfg(64, 128, 1, True, 4, 3, 'last'),  # M=256: 188.6 us
    ('gemv1', 4096, 14336): _cfg(1, 128, 16, False, 4, 5, 'last'),  # M=1: 21.3 us
    ('gemv', 4096, 14336): _cfg(16, 128, 16, True, 4, 3, 'atomic'),  # M=16: 33.9 us
    ('splitk', 4096, 14336): _cfg(32, 128, 8, True, 4, 3, 'atomic'),  # M=32: 54.9 us
    ('gemm64', 4096, 14336): _cfg(64, 64, 4, True, 4, 3, 'last'),  # M=64: 67.8 us
    ('gemm', 4096, 14336): _cfg(64, 128, 2, True, 4, 3, 'last'),  # M=256: 166.7 us
    ('gemv1', 6144, 4096): _cfg(1, 32, 8, False, 4, 5, 'last'),  # M=1: 12.5 us
    ('gemv', 6144, 4096): _cfg(16, 128, 8, True, 4, 3, 'atomic'),  # M=16: 19.2 us
    ('gemv1', 28672, 4096): _cfg(1, 128, 8, False, 4, 3, 'last'),  # M=1: 39.3 us
    ('gemv', 28672, 4096): _cfg(16, 128, 4, True, 4, 3, 'last'),  # M=16: 63.6 us
}


def tuning_key(m: int) -> str:
    """Finer than the path: M == 1 may use the CUDA-core variant; the GEMM path is tuned apart
    for 64 <= M < 128 (decode of large batches) and M >= 128 (prefill)."""
    if m == 1:
        return "gemv1"
    p = path_for(m)
    return "gemm64" if p == "gemm" and m < 128 else p


def pick_config(m: int, n: int, k: int) -> dict:
    key = tuning_key(m)
    return dict(TUNED.get((key, n, k), DEFAULT[key]))
