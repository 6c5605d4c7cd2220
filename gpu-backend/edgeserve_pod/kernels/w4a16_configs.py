"""Meta-parameters of the W4A16 kernel, chosen by M at run time.

`CANDIDATES[key]` is the search space that `bench/quant_gemm.py` sweeps on the GPU; `TUNED`
holds, per (tuning key, N, K), the fastest config of that sweep that also passed the
correctness check (H100, CUDA-graph replay). A shape not in the table gets the key's default.
"""

from __future__ import annotations


def _cfg(bm, bn, split, dot, warps, stages, reduce="last", group_m=8, deq="f32"):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_K": split, "USE_DOT": dot, "REDUCE": reduce,
            "num_warps": warps, "num_stages": stages, "GROUP_M": group_m, "DEQ": deq}


def path_for(m: int) -> str:
    """The three paths: GEMV-style for decode batches, split-K in the middle, GEMM for prefill."""
    if m <= 16:
        return "gemv"
    if m < 64:
        return "splitk"
    return "gemm"


_RED = ("last", "atomic")
L3, L3S = "lop3", "lop3s"

# Old "f32" dequant configs: only those within ~5% of the winner of some (shape, M) in
# bench/results/quant/2026-11-22-h100-sweep.json; the rest never won and were dropped.
# New "lop3" configs (16-bit codes from one lop3 per two codes) and "lop3s" ((q - z) * s made in
# 16 bits, one accumulator) beside them, timed in the same run.
CANDIDATES: dict[str, list[dict]] = {  # "gemm64" sweeps the "gemm" list
    # M == 1: the CUDA-core path (BLOCK_M = 1) and the 16-row tensor-core tile (15 rows masked)
    "gemv1": [_cfg(1, 32, 8, False, 4, 3), _cfg(1, 32, 8, False, 4, 5), _cfg(1, 32, 4, False, 4, 3),
              _cfg(1, 128, 8, False, 4, 3), _cfg(1, 128, 16, False, 4, 5), _cfg(1, 64, 16, False, 4, 3)]
             + [_cfg(1, bn, sk, False, 4, 3, deq=L3) for bn in (32, 128) for sk in (4, 8, 16)]
             + [_cfg(16, bn, sk, True, w, st, "last", deq=L3) for bn in (64, 128, 256) for sk in (4, 8, 16)
                for w, st in ((4, 3), (4, 5))]
             + [_cfg(16, bn, sk, True, 4, 3, "atomic", deq=L3) for bn in (64, 128) for sk in (8, 16)]
             + [_cfg(16, bn, sk, True, 2, 4, "last", deq=L3) for bn in (32, 64) for sk in (8, 16)]
             + [_cfg(16, bn, sk, True, 4, 3, "last", deq=L3S) for bn in (64, 128) for sk in (8, 16)],
    "gemv": [_cfg(16, 128, sk, True, 4, 3, r) for sk in (4, 8, 16) for r in _RED]
            + [_cfg(16, bn, sk, True, 4, 3, r, deq=L3) for bn in (64, 128, 256) for sk in (4, 8, 16) for r in _RED]
            + [_cfg(16, 128, sk, True, 4, 5, "last", deq=L3) for sk in (8, 16)]
            + [_cfg(16, 64, sk, True, 2, 4, "last", deq=L3) for sk in (8, 16)]
            + [_cfg(16, bn, sk, True, 4, 3, "last", deq=L3S) for bn in (64, 128) for sk in (4, 8, 16)],
    "splitk": [_cfg(32, 128, sk, True, 4, 3, r) for sk in (2, 8) for r in _RED]
              + [_cfg(32, bn, sk, True, 4, 3, r, deq=L3) for bn in (64, 128) for sk in (2, 4, 8) for r in _RED]
              + [_cfg(32, bn, sk, True, 4, 3, "last", deq=L3S) for bn in (64, 128) for sk in (2, 4, 8)],
    "gemm": [_cfg(64, 64, 4, True, 4, 3), _cfg(64, 128, 1, True, 4, 3), _cfg(64, 128, 2, True, 4, 3),
             _cfg(64, 128, 4, True, 4, 3), _cfg(128, 64, 4, True, 4, 3)]
            # two (BM, BN) fp32 tiles live (the block's partial and the accumulator): 4 warps spill
            # at 64 x 128 and up (bench/quant_gemm.py --compile-only), so the larger tiles get 8
            + [_cfg(64, bn, sk, True, w, 3, deq=L3) for bn in (64, 128) for sk in (1, 2, 4) for w in (4, 8)]
            + [_cfg(64, 256, sk, True, 8, 3, deq=L3) for sk in (1, 2)]
            + [_cfg(128, 128, sk, True, 8, st, deq=L3) for sk in (1, 2) for st in (3, 4)]
            + [_cfg(128, 256, 1, True, 8, 3, deq=L3)]
            + [_cfg(128, 64, sk, True, 8, 3, deq=L3) for sk in (2, 4)]
            # one fp32 tile: 64 x 128 on 4 warps fits at SPLIT_K = 1
            + [_cfg(64, bn, sk, True, w, 3, deq=L3S) for bn in (64, 128) for sk in (1, 2, 4) for w in (4, 8)]
            + [_cfg(64, 256, sk, True, 8, 3, deq=L3S) for sk in (1, 2)]
            + [_cfg(128, 128, sk, True, 8, 3, deq=L3S) for sk in (1, 2)] + [_cfg(128, 256, 1, True, 8, 3, deq=L3S)],
}
CANDIDATES["gemm64"] = CANDIDATES["gemm"]

DEFAULT: dict[str, dict] = {
    "gemv1": _cfg(1, 32, 8, False, 4, 3),
    "gemv": _cfg(16, 64, 8, True, 4, 3),
    "splitk": _cfg(32, 64, 4, True, 4, 3),
    "gemm64": _cfg(64, 128, 2, True, 4, 3),
    "gemm": _cfg(64, 128, 2, True, 4, 3),
}

# (tuning key, N, K) -> the fastest config that passed the correctness check (and, for lop3,
# equalled its integer twin bit for bit), from bench/results/quant/2026-11-22-h100-lop3.json
# (H100, CUDA-graph replay).
TUNED: dict[tuple[str, int, int], dict] = {
    ('gemv1', 4096, 4096): _cfg(1, 128, 16, False, 4, 3, 'last', 8, 'lop3'),
    ('gemv', 4096, 4096): _cfg(16, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('splitk', 4096, 4096): _cfg(32, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm64', 4096, 4096): _cfg(64, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm', 4096, 4096): _cfg(128, 128, 2, True, 8, 3, 'last', 8, 'lop3s'),
    ('gemv1', 14336, 4096): _cfg(1, 128, 4, False, 4, 3, 'last', 8, 'lop3'),
    ('gemv', 14336, 4096): _cfg(16, 128, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('splitk', 14336, 4096): _cfg(32, 128, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm64', 14336, 4096): _cfg(64, 128, 2, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm', 14336, 4096): _cfg(128, 256, 1, True, 8, 3, 'last', 8, 'lop3s'),
    ('gemv1', 4096, 14336): _cfg(1, 128, 16, False, 4, 3, 'last', 8, 'lop3'),
    ('gemv', 4096, 14336): _cfg(16, 64, 8, True, 4, 3, 'last', 8, 'lop3s'),
    ('splitk', 4096, 14336): _cfg(32, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm64', 4096, 14336): _cfg(64, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemm', 4096, 14336): _cfg(128, 128, 2, True, 8, 3, 'last', 8, 'lop3s'),
    ('gemv1', 6144, 4096): _cfg(1, 32, 8, False, 4, 3, 'last', 8, 'lop3'),
    ('gemv', 6144, 4096): _cfg(16, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
    ('gemv1', 28672, 4096): _cfg(1, 128, 4, False, 4, 3, 'last', 8, 'lop3'),
    ('gemv', 28672, 4096): _cfg(16, 64, 4, True, 4, 3, 'last', 8, 'lop3s'),
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
