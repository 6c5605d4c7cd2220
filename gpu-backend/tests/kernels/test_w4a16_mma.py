"""The CUDA mma W4A16 kernel (kernels/w4a16_mma.py, csrc/w4a16_mma.cu).

On CPU (CI): the repacked layout against the Triton layout, and the fragment contract the kernel
relies on, derived independently here from the PTX mma.m16n8k16 B-fragment definition (lane l holds
column l / 4, rows 2 (l % 4) + {0, 1} in b0 and + {8, 9} in b1) and the kernel's word use (words
0/1: k-step 2 kp, tiles 0-1 / 2-3; words 2/3: k-step 2 kp + 1; lop3 of word >> 4 i pairs nibbles i
and i + 4). On a GPU with nvcc: the kernel against the float32 dequantized reference."""

from __future__ import annotations

import pytest
import torch

from edgeserve_pod.kernels import w4a16 as W
from edgeserve_pod.kernels import w4a16_mma as MMA


def weights(n, k, group=128, seed=0, dtype=torch.bfloat16, mma=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    ng = -(-k // group)
    s = (torch.rand(ng, n, generator=g) * 0.02 + 1e-3).half()
    z = torch.randint(0, 16, (ng, n), generator=g, dtype=torch.uint8)
    qw = W.pack_int4(q)
    return q, qw, s, z, MMA.MmaWeights.from_triton(qw, s, z, group, k, dtype) if mma else None


@pytest.mark.parametrize("n,k", [(32, 128), (64, 384), (96, 200)])
def test_repack_roundtrip(n, k):
    q, qw, _, _, mw = weights(n, k)
    kp = W.padded_k(k)
    assert mw.qw.shape == (n // 32, kp // 32, 32, 4) and mw.qw.dtype == torch.int32
    codes = MMA.unpack_mma(mw.qw)
    assert torch.equal(codes[:, :k], q) and not codes[:, k:].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [128, 256])
def test_dequantize_matches_triton_layout(dtype, group):
    q, qw, s, z, mw = weights(64, 520, group, seed=1, dtype=dtype)
    assert torch.equal(mw.dequantize(), W.dequantize(qw, s, z, group, 520))
    assert mw.zc.dtype == torch.int32 and torch.equal(mw.zeros_f32(), z.float())
    lo, hi = mw.zc & 0xFFFF, (mw.zc >> 16) & 0xFFFF
    assert torch.equal(lo, hi)  # the same value in both halves: one sub.x2 operand


def test_fragment_contract():
    n, k = 64, 256
    q, _, _, _, mw = weights(n, k, seed=2)
    w = mw.qw.to(torch.int64)  # (nb, kp, lane, word)
    checked = 0
    for nb in range(n // 32):
        for kp in range(k // 32):
            for lane in range(32):
                for word in range(4):
                    step, pair = 2 * kp + word // 2, word % 2
                    for i in range(4):
                        lo = int((w[nb, kp, lane, word] >> (4 * i)) & 0xF)
                        hi = int((w[nb, kp, lane, word] >> (4 * i + 16)) & 0xF)
                        tile, frag = 2 * pair + i // 2, i % 2
                        col = 32 * nb + 8 * tile + lane // 4
                        row = 16 * step + 2 * (lane % 4) + 8 * frag
                        assert (lo, hi) == (int(q[col, row]), int(q[col, row + 1]))
                        checked += 1
    assert checked == (n // 32) * (k // 32) * 32 * 4 * 4


def test_reference_and_bounds():
    _, qw, s, z, mw = weights(32, 256)
    x = torch.randn(3, 256)
    ref = W.w4a16_reference(x, qw, s, z, 128)
    assert torch.allclose(MMA.mma_reference(x, mw), ref, rtol=1e-5, atol=1e-5)
    assert MMA.supported(256, 32, 128) and not MMA.supported(256, 48, 128) and not MMA.supported(255, 32, 128)
    with pytest.raises(ValueError):
        MMA.repack_mma(torch.zeros(48, 128, dtype=torch.int64))
    assert MMA.schedule_for(1)[0] in (3, 4, 6) and MMA.schedule_for(16)[0] in (3, 4, 6)
    with pytest.raises(ValueError):
        MMA.schedule_for(17)


gpu = pytest.mark.skipif(not torch.cuda.is_available() or not MMA.available(),
                         reason="needs a CUDA GPU and nvcc (the mma kernel is built at run time)")


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k,group", [(96, 200, 128), (4096, 4096, 128), (256, 1024, 256), (64, 14336, 128)])
def test_kernel_matches_reference(dtype, n, k, group):
    _, qw, s, z, mw = weights(n, k, group, seed=3, dtype=dtype)
    mw = MMA.MmaWeights(mw.qw.cuda(), mw.zc.cuda(), mw.sc.cuda(), dtype, group, k)
    wf = mw.dequantize()
    for m in (1, 5, 8, 9, 16):
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        ref = x.float() @ wf.t()
        for depth in (3, 4, 6):
            for wk in (4, 8):
                if not MMA.fits(m, depth, wk):
                    continue
                out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
                y = MMA.mma_matmul(x, mw, depth, wk, out=out)
                err = ((y.float() - ref).norm() / ref.norm()).item()
                assert err < 4e-3, (m, depth, wk, err)  # output rounding to 16 bits: ~1e-3 (bf16), less for fp16
    with pytest.raises(ValueError):
        MMA.mma_matmul(torch.randn(17, k, device="cuda", dtype=dtype), mw)


@gpu
def test_kernel_strided_rows_and_batch_dims():
    _, _, _, _, mw = weights(64, 256, seed=4)
    mw = MMA.MmaWeights(mw.qw.cuda(), mw.zc.cuda(), mw.sc.cuda(), torch.bfloat16, 128, 256)
    big = torch.randn(2, 3, 512, device="cuda", dtype=torch.bfloat16)
    x = big[..., :256]  # rows with stride 512
    y = MMA.mma_matmul(x, mw)
    ref = (x.float() @ mw.dequantize().t())
    assert y.shape == (2, 3, 64)
    assert ((y.float() - ref).norm() / ref.norm()).item() < 4e-3


# ------------------------------------------- swapped-operand kernel on the Triton layout

def _linear(n, k, device, seed=8):
    from edgeserve_pod.layers.linear_w4a16 import W4A16Linear

    _, qw, s, z, _ = weights(n, k, 128, seed=seed, mma=False)
    lin = W4A16Linear(k, n, False, torch.bfloat16, torch.device(device))
    for name, t in (("qweight", qw), ("scales", s), ("zeros", z)):
        lin.load(name, t.to(device))
    return lin, W.dequantize(qw, s, z, 128, k)


def test_decode_kernel_choice():
    from edgeserve_pod.layers.linear_w4a16 import decode_kernel

    assert decode_kernel(1, 4096, 4096) == (1, 16, 1)
    assert decode_kernel(1, 28672, 4096) == (2, 4, 1) and decode_kernel(1, 14336, 4096) == (1, 4, 1)
    assert decode_kernel(1, 6144, 4096) == (1, 8, 1)
    assert decode_kernel(2, 28672, 4096) == (8, 2, 1)  # wide N from M = 2
    assert decode_kernel(4, 14336, 4096) == (4, 4, 1) and decode_kernel(8, 4096, 14336) == (8, 2, 8)
    assert decode_kernel(4, 4096, 4096) == (1, 16, 1) and decode_kernel(8, 4096, 4096) is None
    assert decode_kernel(9, 28672, 4096) is None and decode_kernel(0, 4096, 4096) is None
    # 17 <= M <= 64, streamed x: wide and fused projections, long K past 32; 4096 x 4096 on Triton
    assert decode_kernel(17, 28672, 4096) == (8, 1, 1, True) and decode_kernel(64, 28672, 4096) == (16, 1, 1, True)
    assert decode_kernel(32, 6144, 4096) == (4, 1, 4, True) and decode_kernel(64, 6144, 4096) == (4, 1, 4, True)
    assert decode_kernel(32, 14336, 4096) == (8, 2, 1, True) and decode_kernel(64, 14336, 4096) == (8, 2, 1, True)
    assert decode_kernel(64, 4096, 4096) is None and decode_kernel(32, 4096, 14336) is None
    assert decode_kernel(33, 4096, 14336) == (8, 2, 4, True) and decode_kernel(33, 4160, 14336) is None
    assert decode_kernel(65, 28672, 4096) is None and decode_kernel(64, 28688, 4096) is None  # N % 256
    # an H100: the widest layers past M = 16 run the warpgroup-MMA kernel
    assert decode_kernel(17, 28672, 4096, hopper=True) == ("wg", 4, 1) and decode_kernel(16, 28672, 4096, hopper=True) is None
    assert decode_kernel(64, 6144, 4096, hopper=True) == (4, 1, 4, True) and decode_kernel(64, 28688, 4096, True) is None
    assert decode_kernel(1, 4104, 4096) is None  # N % 16
    assert decode_kernel(8, 4160, 14336) is None and decode_kernel(4, 4160, 14336) == (4, 2, 8)  # N % 128, % 64
    for m in range(1, MMA.SWAP_MAX_M + 1):  # every launch the table names is one the .cu builds, and fits
        for n, k in ((4096, 4096), (6144, 4096), (14336, 4096), (28672, 4096), (4096, 14336), (4160, 14336),
                     (12304, 4096), (2048, 8192), (1536, 8960), (8960, 1536)):
            for hopper in (False, True):
                pick = decode_kernel(m, n, k, hopper)
                if pick is None:
                    continue
                if pick[0] == "wg":
                    assert 8 < m and pick[1] in MMA.WG_VARIANTS and n % (64 * pick[1]) == 0, (m, n, k, pick)
                    assert MMA.wg_smem_bytes(m, pick[1]) <= MMA.SMEM_LIMIT
                    continue
                sx = len(pick) == 4 and pick[3]
                assert pick[:2] in MMA.swap_variants(m, sx) and n % (16 * pick[0]) == 0, (m, n, k, pick)
                assert MMA.swap_smem_bytes(m, W.padded_k(k), *pick) <= MMA.SMEM_LIMIT, (m, n, k, pick)


def test_swap_variants_and_smem():
    assert MMA.swap_variants(16) == MMA.SWAP_VARIANTS_DECODE and MMA.swap_variants(17) == MMA.SWAP_VARIANTS_WIDE
    assert MMA.swap_variants(8, True) == () and MMA.swap_variants(9, True) == MMA.SWAPX_VARIANTS
    assert MMA.swap_smem_bytes(64, 4096, 8, 1, 1, True) == 3 * 64 * 136 * 2 + 8 * 3 * 16 * 20 * 4
    assert MMA.launch_key(8, 1, 2, True) == "s8x1x2" and MMA.launch_key(1, 16, 1) == "1x16x1"
    assert MMA.launch_key("wg", 2, 4) == "wg2x4"
    assert MMA.wg_smem_bytes(64, 4) == 4 * 8 * 16 * 128 + 16 * 4 * 16 * 20 * 4
    # the x slice (M rows, padded by 8) and the reduction tile share the front of shared memory
    assert MMA.swap_smem_bytes(64, 4096, 8, 2, 8) == 64 * 520 * 2 + 16 * 2 * 16 * 20 * 4
    assert MMA.swap_smem_bytes(1, 128, 16, 1, 1) == 16 * 8 * 16 * 4 + 16 * 2 * 16 * 20 * 4


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(512, 4096), (256, 200), (512, 1408)])
def test_swap_every_launch(dtype, n, k):
    """Every (nt, wk, ks) the .cu builds, staged and streamed x, at M = 1 .. 64 (each MT), against the float32 reference,
    with a NaN-poisoned output, twice (the workspace must be left zeroed), on aligned rows (x by
    cp.async) and on odd-strided rows (the synchronous path); K = 200 pads to 256 (zero-filled x)."""
    _, qw, s, z, _ = weights(n, k, 128, seed=11, mma=False)
    qw, s, z = qw.cuda(), s.cuda(), z.cuda()
    wf = W.dequantize(qw, s, z, 128, k).cuda()
    kp = W.padded_k(k)
    checked = 0
    for m in (1, 7, 9, 16, 17, 32, 33, 64):
        big = torch.randn(m, k + 1, device="cuda", dtype=dtype)
        for x in (big[:, :k].contiguous(), big[:, 1:]):  # aligned / row stride k + 1, 2-byte offset
            ref = x.float() @ wf.t()
            for sx in (False, True):
                for nt, wk in MMA.swap_variants(m, sx):
                    for ks in (1, 2, 4, 8):
                        if n % (16 * nt) or ks > kp // 128 or MMA.swap_smem_bytes(m, kp, nt, wk, ks, sx) > MMA.SMEM_LIMIT:
                            continue
                        for _ in range(2):
                            out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
                            y = MMA.swap_matmul(x, qw, s, z, 128, nt, wk, ks, sx, out=out)
                            err = ((y.float() - ref).norm() / ref.norm()).item()
                            assert err < 4e-3, (m, nt, wk, ks, sx, x.stride(), err)
                        checked += 1
    ws, cnt = MMA._swap_ws(torch.device("cuda", torch.cuda.current_device()))
    assert not ws.any() and not cnt.any()
    assert checked > 150
    with pytest.raises(ValueError):
        MMA.swap_matmul(torch.randn(65, k, device="cuda", dtype=dtype), qw, s, z, 128, 4, 2, 1)
    with pytest.raises(ValueError):  # a decode-only launch at M > 16
        MMA.swap_matmul(torch.randn(17, k, device="cuda", dtype=dtype), qw, s, z, 128, 1, 16, 1)
    with pytest.raises(ValueError):  # streamed x starts past M = 8
        MMA.swap_matmul(torch.randn(8, k, device="cuda", dtype=dtype), qw, s, z, 128, 8, 1, 1, True)


@gpu
@pytest.mark.parametrize("n,k", [(4096, 4096), (14336, 4096), (4096, 14336), (6144, 4096), (28672, 4096)])
def test_linear_every_m(monkeypatch, n, k):
    """Decode-sized M runs the CUDA kernel decode_kernel names, on the layer's own (Triton-layout)
    tensors, larger M the Triton kernel; all against the float32 reference."""
    from edgeserve_pod.layers import linear_w4a16 as L

    lin, wf = _linear(n, k, "cuda")
    wf = wf.cuda()
    calls = []
    real = MMA.swap_matmul
    monkeypatch.setattr(MMA, "swap_matmul", lambda *a, **kw: calls.append((a[0].shape[1], tuple(a[5:]))) or real(*a, **kw))
    real_wg = MMA.wg_matmul
    monkeypatch.setattr(MMA, "wg_matmul", lambda *a, **kw: calls.append((a[0].shape[1], ("wg", *a[5:]))) or real_wg(*a, **kw))
    for m in (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65):
        calls.clear()
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        y = lin(x.view(1, m, k))
        ref = x.float() @ wf.t()
        assert y.shape == (1, m, n)
        assert ((y[0].float() - ref).norm() / ref.norm()).item() < 5e-3, m
        want = L.decode_kernel(m, n, k, MMA.wg_supported())
        assert calls == ([] if want is None else [(m, want)]), (m, calls)


@pytest.mark.skipif(not MMA.wg_supported() or not MMA.available(), reason="needs an sm_90 GPU and nvcc")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(512, 4096), (256, 200), (512, 1408)])
def test_wg_every_launch(dtype, n, k):
    """The warpgroup-MMA kernel: every (wg, ks) at M = 9 .. 64 (each N of the instruction), aligned
    and odd-strided x, twice (workspace left zeroed), against the float32 reference."""
    _, qw, s, z, _ = weights(n, k, 128, seed=12, mma=False)
    qw, s, z = qw.cuda(), s.cuda(), z.cuda()
    wf = W.dequantize(qw, s, z, 128, k).cuda()
    kp = W.padded_k(k)
    checked = 0
    for m in (9, 16, 17, 31, 32, 33, 64):
        big = torch.randn(m, k + 1, device="cuda", dtype=dtype)
        for x in (big[:, :k].contiguous(), big[:, 1:]):
            ref = x.float() @ wf.t()
            for wg in MMA.WG_VARIANTS:
                for ks in (1, 2, 4):
                    if n % (64 * wg) or ks > kp // 128:
                        continue
                    for _ in range(2):
                        out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
                        y = MMA.wg_matmul(x, qw, s, z, 128, wg, ks, out=out)
                        err = ((y.float() - ref).norm() / ref.norm()).item()
                        assert err < 4e-3, (m, wg, ks, x.stride(), err)
                    checked += 1
    ws, cnt = MMA._swap_ws(torch.device("cuda", torch.cuda.current_device()))
    assert not ws.any() and not cnt.any()
    assert checked > 60
    with pytest.raises(ValueError):
        MMA.wg_matmul(torch.randn(8, k, device="cuda", dtype=dtype), qw, s, z, 128, 1, 1)
