"""Meta-parameters of the W4A16 kernel, chosen by M at run time.

`CANDIDATES[path]` is the search space `bench/quant_gemm.py` sweeps on the GPU; `TUNED` holds the
winner per (path, N, K) measured there (H100, CUDA-graph replay). A shape not in the table gets
the path's default, which is the winner most often seen in the sweep.
"""

from __future__ import annotations


def _cfg(bm, bn, bk, split, dot, warps, stages, reshape=True, group_m=8):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "USE_DOT": dot,
            "num_warps": warps, "num_stages": stages, "RESHAPE": reshape, "GROUP_M": group_m}


def path_for(m: int) -> str:
    """The three paths: GEMV-style for decode batches, split-K in the middle, GEMM for prefill."""
    if m <= 16:
        return "gemv"
    if m < 64:
        return "splitk"
    return "gemm"


_R = (True, False)  # unpack by reshape (one load per word) or by gather (one load per code)

CANDIDATES: dict[str, list[dict]] = {
    # M == 1 also tries the CUDA-core path (no tensor cores, BLOCK_M = 1).
    "gemv1": [_cfg(1, bn, 128, sk, False, w, 3, r) for bn in (32, 64, 128) for sk in (1, 2, 4, 8)
              for w in (4, 8) for r in _R]
             + [_cfg(16, bn, 128, sk, True, 4, 3, r) for bn in (32, 64, 128) for sk in (1, 2, 4, 8) for r in _R],
    "gemv": [_cfg(16, bn, bk, sk, True, 4, 3, r) for bn in (32, 64, 128) for bk in (64, 128)
             for sk in (1, 2, 4, 8) for r in _R],
    "splitk": [_cfg(32, bn, bk, sk, True, w, 3, r) for bn in (64, 128) for bk in (64, 128)
               for sk in (1, 2, 4) for w in (4, 8) for r in _R],
    "gemm": [_cfg(bm, bn, bk, sk, True, w, st) for bm in (64, 128) for bn in (64, 128, 256) for bk in (64, 128)
             for sk in (1, 2) for w, st in ((4, 3), (8, 3), (8, 4))]
            + [_cfg(bm, 128, 64, 1, True, 8, 3, False) for bm in (64, 128)],
}

DEFAULT: dict[str, dict] = {
    "gemv1": _cfg(16, 64, 128, 4, True, 4, 3),
    "gemv": _cfg(16, 64, 128, 4, True, 4, 3),
    "splitk": _cfg(32, 64, 128, 2, True, 4, 3),
    "gemm": _cfg(128, 128, 64, 1, True, 8, 3),
}

# (path, N, K) -> config; filled from bench/results/quant/*-h100*.json
TUNED: dict[tuple[str, int, int], dict] = {}


def tuning_key(m: int) -> str:
    return "gemv1" if m == 1 else path_for(m)


def pick_config(m: int, n: int, k: int, group_size: int) -> dict:
    key = tuning_key(m)
    cfg = dict(TUNED.get((key, n, k), DEFAULT[key]))
    # BLOCK_K must divide the group size (one scale row per K tile)
    while group_size % cfg["BLOCK_K"]:
        cfg["BLOCK_K"] //= 2
    return cfg
