"""Meta-parameters of the W4A16 kernel, chosen by M at run time.

`CANDIDATES[path]` is the search space `bench/quant_gemm.py` sweeps on the GPU; `TUNED` holds the
winner per (path, N, K) measured there (H100, CUDA-graph replay). A shape not in the table gets
the path's default, which is the winner most often seen in the sweep.
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

CANDIDATES: dict[str, list[dict]] = {
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

DEFAULT: dict[str, dict] = {
    "gemv1": _cfg(1, 32, 8, False, 4, 3),
    "gemv": _cfg(16, 64, 8, True, 4, 3),
    "splitk": _cfg(32, 64, 4, True, 4, 3),
    "gemm": _cfg(128, 64, 2, True, 8, 3),
}

# (path, N, K) -> config; filled from bench/results/quant/*-h100*.json
TUNED: dict[tuple[str, int, int], dict] = {}


def tuning_key(m: int) -> str:
    return "gemv1" if m == 1 else path_for(m)


def pick_config(m: int, n: int, k: int) -> dict:
    key = tuning_key(m)
    return dict(TUNED.get((key, n, k), DEFAULT[key]))
