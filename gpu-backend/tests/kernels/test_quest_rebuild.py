"""rebuild_page_minmax (blocks filled from outside the model, e.g. a KV import) against what the
KV write keeps (write_kv + update_page_minmax), for float and fp8 caches."""
import pytest
import torch

from edgeserve_pod.kernels.quest import rebuild_page_minmax, update_page_minmax
from edgeserve_pod.layers.kv_write import FP8_DTYPE, dequantize, write_kv

BS, HKV, D, NB = 8, 2, 16, 7
TABLE = torch.tensor([5, 0, 3])  # three full blocks, out of order


def _written(cache_dtype, minmax_dtype, gen):
    """Keys written the engine's way, in prefill chunks then decode steps; returns the cache, the
    min/max the write kept, the per-head scale (fp8) and the keys."""
    n = len(TABLE) * BS
    keys = torch.randn(n, HKV, D, generator=gen) * torch.tensor([1.0, 7.0])[None, :, None]
    keys[3, 1, 2] = 40.0  # one outlier, so the fp8 scale's range is used
    k_cache = torch.zeros(NB, BS, HKV, D, dtype=cache_dtype)
    v_cache = torch.zeros_like(k_cache)
    fp8 = cache_dtype == FP8_DTYPE
    scale = torch.zeros(HKV) if fp8 else None
    kmin = torch.full((NB, HKV, D), 99.0, dtype=minmax_dtype)  # stale values of a previous owner
    kmax = torch.full((NB, HKV, D), -99.0, dtype=minmax_dtype)
    slots = TABLE[torch.arange(n) // BS] * BS + torch.arange(n) % BS
    for lo, hi in [(0, 11), (11, 20), (20, 21), (21, n)]:
        k = keys[lo:hi].to(minmax_dtype if not fp8 else torch.float32)
        write_kv(k, k, k_cache, v_cache, slots[lo:hi], scale, scale.clone() if fp8 else None)
        update_page_minmax(k, slots[lo:hi], kmin, kmax, BS)
    return k_cache, kmin, kmax, scale, keys


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_float_cache_rebuild_equals_write(dtype):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    k_cache, kmin, kmax, _, _ = _written(dtype, dtype, gen)
    rmin = torch.full_like(kmin, 99.0)
    rmax = torch.full_like(kmax, -99.0)
    rebuild_page_minmax(k_cache, TABLE, rmin, rmax)
    assert torch.equal(rmin[TABLE], kmin[TABLE]) and torch.equal(rmax[TABLE], kmax[TABLE])
    others = torch.tensor([b for b in range(NB) if b not in TABLE.tolist()])
    assert (rmin[others] == 99.0).all() and (rmax[others] == -99.0).all()  # other blocks untouched


def test_fp8_cache_rebuild_is_bound_of_dequantized_keys():
    """fp8: the write's min/max come from the keys before quantisation; the rebuild has only the
    cache, so its min/max are those of the dequantized keys (what attention reads). The two differ
    by at most the e4m3 rounding (half an ulp: 1/16 relative) plus the bf16 rounding of min/max."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    k_cache, kmin, kmax, scale, _ = _written(FP8_DTYPE, torch.bfloat16, gen)
    assert (scale > 0).all()
    rmin = torch.zeros_like(kmin)
    rmax = torch.zeros_like(kmax)
    rebuild_page_minmax(k_cache, TABLE, rmin, rmax, scale)
    deq = dequantize(k_cache[TABLE], scale, torch.float32)  # (n, BS, HKV, D)
    assert torch.equal(rmin[TABLE], deq.amin(1).to(torch.bfloat16))
    assert torch.equal(rmax[TABLE], deq.amax(1).to(torch.bfloat16))
    tol = (1 / 16 + 1 / 128) * kmin[TABLE].float().abs() + scale[None, :, None] * 2.0 ** -9  # + e4m3 subnormal step
    assert ((rmin[TABLE].float() - kmin[TABLE].float()).abs() <= tol).all()
    tol = (1 / 16 + 1 / 128) * kmax[TABLE].float().abs() + scale[None, :, None] * 2.0 ** -9
    assert ((rmax[TABLE].float() - kmax[TABLE].float()).abs() <= tol).all()
    # and the difference is real: the rebuild does not just copy the write's values
    assert not torch.equal(rmin[TABLE], kmin[TABLE])
