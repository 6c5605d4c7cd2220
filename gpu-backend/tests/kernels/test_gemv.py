"""bf16 GEMV with fused prologues/epilogue: every prologue x residual x bias combination, M = 1..4,
odd N/K tails, against a float32 torch reference on fresh random inputs (Triton interpreter on
CPU, small shapes); the real Llama shapes on a GPU."""

from __future__ import annotations

import pytest
import torch

from edgeserve_pod.kernels import gemv as G
from edgeserve_pod.layers.activation import silu_and_mul_reference
from edgeserve_pod.layers.rmsnorm import RMSNorm

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BF = torch.bfloat16


def operands(m, n, k, prologue, bias, residual, seed, device=DEV):
    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(BF)

    x = rnd(m, 2 * k if prologue == "silu_mul" else k, scale=2.0)
    w = rnd(n, k, scale=k ** -0.5)
    return dict(
        x=x, weight=w,
        bias=rnd(n) if bias else None,
        norm_weight=(1.0 + rnd(k, scale=0.3).float()).to(BF) if prologue == "rmsnorm" else None,
        residual=rnd(m, n, scale=4.0) if residual else None,
    )


def check(y, ops, prologue, eps=1e-5):
    """Against the float32 chain (prologue, float32 dot, + bias, + residual, no roundings after
    the prologue); nothing of y may be NaN (unwritten)."""
    kw = dict(prologue=prologue, norm_weight=ops["norm_weight"], eps=eps, out_dtype=torch.float32)
    dot = G.gemv_reference(ops["x"], ops["weight"], ops["bias"], **kw)
    res = ops["residual"]
    ref = dot if res is None else dot + res.float()
    assert y.dtype == BF and y.shape == ref.shape
    assert not torch.isnan(y).any()
    err = (y.float() - ref).abs()
    # two bf16 roundings (2^-9 relative each): of the dot, then of dot + residual; dots summed in
    # another order; a wrong prologue or a missed term is off by O(1) relative
    mag = dot.abs() + (0 if res is None else res.float().abs())
    tol = 1e-2 * mag + 1e-3 * mag.max()
    bad = err > tol
    assert not bad.any(), f"{int(bad.sum())} bad, max err {err.max().item():.3e}, first ref {ref[bad][0].item():.3e}"


def test_reference_prologues_are_the_layers():
    """The kernel's numerics are defined by these: they must stay the layers' references."""
    g = torch.Generator().manual_seed(1)
    r = (torch.randn(3, 64, generator=g) * 3).to(BF)
    norm = RMSNorm(64, 1e-5, BF, torch.device("cpu"))
    norm.weight.data = (1 + torch.randn(64, generator=g) * 0.2).to(BF)
    assert torch.equal(G.apply_prologue(r, "rmsnorm", norm.weight, 1e-5), norm.reference(r, None)[0])
    gu = (torch.randn(3, 128, generator=g) * 3).to(BF)
    assert torch.equal(G.apply_prologue(gu, "silu_mul"), silu_and_mul_reference(gu))


SMALL = G._cfg(8, 32, 4, 1, prefetch=True)  # the register double buffer


@pytest.mark.parametrize("prologue", ["rmsnorm", "silu_mul"])
def test_prologue_is_bit_exact(prologue):
    """With W = I the output is the prologue's activation itself: it must equal the layers'
    bf16 roundings bit for bit (a kernel that rounds once too few or too many times fails)."""
    m, k = 3, 48
    ops = operands(m, k, k, prologue, bias=False, residual=False, seed=11)
    ops["weight"] = torch.eye(k, dtype=BF, device=DEV)
    y = G.gemv(**ops, prologue=prologue, eps=1e-5, config=G._cfg(16, 32, 4, 2))
    a = G.apply_prologue(ops["x"], prologue, ops["norm_weight"], 1e-5)
    if DEV == "cpu":
        assert torch.equal(y, a), f"{int((y != a).sum())} of {y.numel()} differ"
    else:  # the GPU's approximate rsqrt / exp may flip a rounding that sits on a tie: 1 ulp, rarely
        ulp = (a.float().abs() * 2.0 ** -7).clamp_min(1e-30)
        assert ((y.float() - a.float()).abs() <= ulp).all() and (y != a).float().mean() < 0.02


@pytest.mark.parametrize("prologue", G.PROLOGUES)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_combinations(prologue, residual, m):
    n, k = 19, 80  # N tail of 3 in the last BLOCK_N=8 tile, K = 2.5 BLOCK_K tiles
    ops = operands(m, n, k, prologue, bias=m % 2 == 1, residual=residual, seed=m * 7 + residual)
    before = None if ops["residual"] is None else ops["residual"].clone()
    y = G.gemv(**ops, prologue=prologue, eps=1e-5, config=SMALL)
    check(y, ops, prologue)
    if before is not None:  # written to a new tensor, the residual is left as it was
        assert y.data_ptr() != ops["residual"].data_ptr() and torch.equal(ops["residual"], before)


@pytest.mark.parametrize("n,k,cfg", [
    (1, 16, G._cfg(2, 16, 1, 1, prefetch=True)),
    (5, 33, G._cfg(4, 16, 2, 1, defer=True, prefetch=True)),  # odd K: every tile masked, prefetch too
    (19, 64, G._cfg(16, 64, 4, 2, defer=True)),  # even K, N tail
    (7, 96, G._cfg(8, 32, 4, 1)),  # one stage, no prefetch (what CONFIGS mostly holds)
    (64, 200, G._cfg(32, 128, 4, 3)),
])
@pytest.mark.parametrize("prologue", ["rmsnorm", "silu_mul"])
def test_tails(n, k, cfg, prologue):
    for m in (1, 3):
        ops = operands(m, n, k, prologue, bias=True, residual=True, seed=n + k + m)
        check(G.gemv(**ops, prologue=prologue, eps=1e-5, config=cfg), ops, prologue)


def test_default_config_and_out():
    ops = operands(1, 24, 48, None, bias=False, residual=True, seed=3)
    out = torch.full((1, 24), float("nan"), dtype=BF, device=DEV)
    y = G.gemv(**ops, out=out)  # default_config: BLOCK_K 64 for K 48, a masked tail
    assert y is out
    check(y, ops, None)
    with pytest.raises(ValueError, match="not the residual"):
        G.gemv(**ops, out=ops["residual"])


def test_rejects_bad_input():
    ops = operands(5, 8, 16, None, bias=False, residual=False, seed=0)
    assert not G.gemv_supported(5, 16, 8) and G.gemv_supported(4, 16, 8)
    with pytest.raises(ValueError, match="M in 1..4"):
        G.gemv(**ops)
    ops = operands(1, 8, 16, None, bias=False, residual=False, seed=0)
    with pytest.raises(ValueError, match="32 columns"):
        G.gemv(ops["x"], ops["weight"], prologue="silu_mul")
    with pytest.raises(ValueError, match="norm_weight"):
        G.gemv(ops["x"], ops["weight"], prologue="rmsnorm")
    with pytest.raises(ValueError, match="residual must be"):
        G.gemv(ops["x"], ops["weight"], residual=torch.zeros(2, 8, dtype=BF, device=DEV))


# the decoder layer's fusions at the real shapes: (N, K, prologue, residual)
LLAMA_1B = [(3072, 2048, "rmsnorm", False), (2048, 2048, None, True), (16384, 2048, "rmsnorm", False),
            (2048, 8192, "silu_mul", True), (128256, 2048, "rmsnorm", False)]
LLAMA_8B = [(6144, 4096, "rmsnorm", False), (4096, 4096, None, True), (28672, 4096, "rmsnorm", False),
            (4096, 14336, "silu_mul", True), (128256, 4096, "rmsnorm", False)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n,k,prologue,residual", LLAMA_1B + LLAMA_8B)
def test_real_shapes_gpu(n, k, prologue, residual):
    for m in (1, 4):
        ops = operands(m, n, k, prologue, bias=False, residual=residual, seed=m + n, device="cuda")
        check(G.gemv(**ops, prologue=prologue, eps=1e-5), ops, prologue)
        for cfg in (G.default_config(n, k), G._cfg(4, 1024, 4, 1, defer=True, prefetch=True),
                    G._cfg(8, 512, 8, 1, prefetch=True)):
            check(G.gemv(**ops, prologue=prologue, eps=1e-5, config=cfg), ops, prologue)
