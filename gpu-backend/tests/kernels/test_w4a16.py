"""W4A16 GEMM: packing, the torch reference, and the Triton kernel (interpreter on CPU, native on
a GPU) against the float32 dequantized reference on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from edgeserve_pod.kernels import w4a16 as W
from edgeserve_pod.kernels.w4a16_configs import CANDIDATES, pick_config, tuning_key
from edgeserve_pod.quant.rtn import quantize_rtn

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def random_weight(n, k, group=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    ng = -(-k // group)
    s = (torch.rand(ng, n, generator=g) * 0.02 + 1e-3).half()
    z = torch.randint(0, 16, (ng, n), generator=g, dtype=torch.uint8)
    return q, W.pack_int4(q), s, z


@pytest.mark.parametrize("n,k", [(8, 128), (24, 384), (5, 200), (3, 8)])
def test_pack_unpack_roundtrip(n, k):
    q, qw, _, _ = random_weight(n, k)
    assert qw.shape == (W.padded_k(k) // 8, n) and qw.dtype == torch.int32
    assert torch.equal(W.unpack_int4(qw, k), q.to(torch.uint8))


def test_pack_layout_is_block_interleaved():
    # k = 128 * block + 16 * j + r sits at word row 16 * block + r, bits 4j
    q = torch.zeros(1, 256, dtype=torch.int64)
    q[0, 128 + 16 * 3 + 5] = 9
    qw = W.pack_int4(q)
    assert int(qw[16 + 5, 0]) == 9 << 12 and int((qw != 0).sum()) == 1


def test_reference_is_dequantize_then_matmul():
    q, qw, s, z = random_weight(16, 320, seed=1)
    x = torch.randn(3, 320)
    g = torch.arange(320) // 128
    w = (q.float() - z.float().t()[:, g]) * s.float().t()[:, g]  # (N, K) written out by hand
    torch.testing.assert_close(W.w4a16_reference(x, qw, s, z, 128), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_bad_operands_are_rejected_with_a_message():
    _, qw, s, z = random_weight(16, 256)
    with pytest.raises(ValueError, match="K=300"):
        W.w4a16_matmul(torch.randn(2, 300), qw, s, z, 128)
    with pytest.raises(ValueError, match="multiple of 128"):
        W.w4a16_matmul(torch.randn(2, 256), qw, s, z, 64)
    with pytest.raises(ValueError, match="scales/zeros"):
        W.w4a16_matmul(torch.randn(2, 256), qw, s[:1], z[:1], 128)
    with pytest.raises(ValueError, match="int4 codes"):
        W.pack_int4(torch.full((2, 8), 16))


def test_config_choice_by_m():
    assert [tuning_key(m) for m in (1, 2, 16, 17, 63, 64, 127, 128, 4096)] == \
        ["gemv1", "gemv", "gemv", "splitk", "splitk", "gemm64", "gemm64", "gemm", "gemm"]
    assert not pick_config(1, 4096, 4096)["USE_DOT"] or pick_config(1, 4096, 4096)["BLOCK_M"] == 16
    for key in ("gemv", "splitk", "gemm64", "gemm"):  # tensor-core paths need 16-row tiles at least
        assert all(c["BLOCK_M"] >= 16 and c["USE_DOT"] for c in CANDIDATES[key])
    for key, cands in CANDIDATES.items():  # the sweep times the lop3 dequant on tensor cores at every M
        assert all(c["DEQ"] in W.DEQ_CODES for c in cands)
        assert any(c["DEQ"] == "lop3" and c["USE_DOT"] for c in cands), key
        assert all(c["USE_DOT"] for c in cands if c["DEQ"] == "lop3s")


# (M, N, K, config): every path, both split-K reductions and the dequant variants the interpreter
# runs ("f32", and "int": the lop3 path's bits from integer ops), ragged K and N, at tiny sizes
KERNEL_CASES = [
    (1, 64, 512, dict(BLOCK_M=1, BLOCK_N=32, SPLIT_K=2, USE_DOT=False, REDUCE="last")),
    (1, 48, 320, dict(BLOCK_M=1, BLOCK_N=32, SPLIT_K=1, USE_DOT=False)),
    (5, 64, 384, dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=3, USE_DOT=True, REDUCE="atomic")),
    (20, 40, 576, dict(BLOCK_M=32, BLOCK_N=32, SPLIT_K=1, USE_DOT=True)),
    (1, 64, 512, dict(BLOCK_M=1, BLOCK_N=32, SPLIT_K=2, USE_DOT=False, REDUCE="last", DEQ="int")),
    (1, 40, 320, dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=1, USE_DOT=True, DEQ="int")),
    (3, 64, 512, dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=4, USE_DOT=True, REDUCE="last", DEQ="int")),
    (1, 40, 320, dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=1, USE_DOT=True, DEQ="ints")),
    (20, 64, 512, dict(BLOCK_M=32, BLOCK_N=32, SPLIT_K=2, USE_DOT=True, REDUCE="last", DEQ="ints")),
]


@pytest.mark.parametrize("m,n,k,cfg", KERNEL_CASES)
def test_triton_kernel_matches_reference(m, n, k, cfg):
    torch.manual_seed(m * 1000 + k)
    w = torch.randn(n, k) * 0.05
    qw = quantize_rtn(w, 128)
    # the interpreter mishandles bf16 (dot and int->bf16 casts), so it checks fp16; a GPU checks bf16
    dt = torch.bfloat16 if DEV == "cuda" else torch.float16
    x = torch.randn(m, k).to(dt)
    ops = [t.to(DEV) for t in (qw.qweight, qw.scales, qw.zeros)]
    out = torch.full((m, n), float("nan"), dtype=dt, device=DEV)  # poisoned: every element must be written
    cfg = {**cfg, "num_warps": 4, "num_stages": 2}
    y = W.launch(x.to(DEV), *ops, 128, cfg, out=out)
    ref = W.w4a16_reference(x.float(), qw.qweight, qw.scales, qw.zeros, 128)
    assert not torch.isnan(y).any()
    err = ((y.float().cpu() - ref).norm() / ref.norm()).item()
    assert err < 5e-3, err
    if cfg.get("REDUCE") == "last":  # the split-K counters were reset: a second call is right too
        y2 = W.launch(x.to(DEV), *ops, 128, cfg)
        assert ((y2.float().cpu() - ref).norm() / ref.norm()).item() < 5e-3
        assert int(W._counters(torch.device(DEV)).abs().sum()) == 0


def test_row_bound_of_one_launch(monkeypatch):
    """The 8B gate_up shape (N = 28672, K = 4096) at prefill: the default GEMM config (SPLIT_K = 2,
    REDUCE="last") addresses its workspace with pid_k * M * N + row * N in int32, which wraps from
    M = 37450 on. The tile counters run out earlier, at M > 18688 (292 row tiles of 64)."""
    cfg = pick_config(32768, 28672, 4096)
    assert (cfg["SPLIT_K"], cfg["REDUCE"], cfg["BLOCK_M"], cfg["BLOCK_N"]) == (2, "last", 64, 128)
    assert 2 * 37449 * 28672 <= W.INT32_MAX < 2 * 37450 * 28672
    assert W.max_rows(cfg, 28672, 4096) == 18688
    monkeypatch.setattr(W, "MAX_TILES", 1 << 30)  # with enough counters the int32 offset is the bound
    assert W.max_rows(cfg, 28672, 4096) == 37449
    assert W.max_rows({**cfg, "REDUCE": "atomic"}, 28672, 4096) == W.INT32_MAX // 28672
    assert W.max_rows({**cfg, "SPLIT_K": 1}, 28672, 4096) == W.INT32_MAX // 28672


@pytest.mark.parametrize("limit", ["tiles", "int32"])
def test_rows_past_one_launch_are_split(monkeypatch, limit):
    """Shrunken limits stand in for the real ones (which need > 8 GiB of workspace): `launch`
    refuses the rows with a message, `launch_rows` (what w4a16_matmul calls) splits them."""
    m, n, k = 40, 160, 256  # 5 column tiles, 2 K tiles (SPLIT_K = 2)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=2, USE_DOT=True, REDUCE="last", DEQ="int", num_warps=4,
               num_stages=2)
    if limit == "tiles":
        monkeypatch.setattr(W, "MAX_TILES", 10)  # 2 row tiles of 16 per launch
        rows = 32
    else:
        monkeypatch.setattr(W, "INT32_MAX", 2 * n * 26 + 5)  # the workspace offset: 26 rows (x: 32, y: 52)
        rows = 26
    assert W.max_rows(cfg, n, k) == rows
    torch.manual_seed(0)
    qw = quantize_rtn(torch.randn(n, k) * 0.05, 128)
    ops = [t.to(DEV) for t in (qw.qweight, qw.scales, qw.zeros)]
    dt = torch.bfloat16 if DEV == "cuda" else torch.float16
    x = torch.randn(m, k).to(dt).to(DEV)
    with pytest.raises(ValueError, match="M=40 rows exceed"):
        W.launch(x, *ops, 128, cfg)
    y = W.launch_rows(x, *ops, 128, cfg)
    ref = W.w4a16_reference(x.float().cpu(), qw.qweight, qw.scales, qw.zeros, 128)
    assert ((y.float().cpu() - ref).norm() / ref.norm()).item() < 5e-3
    for r in range(0, m, rows):  # each launch's rows are those a single launch computes
        part = W.launch(x[r:r + rows], *ops, 128, cfg)
        assert torch.equal(y[r:r + rows], part)


def test_lop3_is_refused_by_the_interpreter():
    if not W.interpreting():
        pytest.skip("only meaningful under TRITON_INTERPRET=1")
    _, qw, s, z = random_weight(32, 128)
    cfg = dict(BLOCK_M=16, BLOCK_N=32, SPLIT_K=1, USE_DOT=True, DEQ="lop3", num_warps=4, num_stages=2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        W.launch(torch.randn(1, 128).half(), qw, s, z, 128, cfg)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        W.launch(torch.randn(1, 128).half(), qw, s, z, 128, {**cfg, "DEQ": "lop3s"})
    with pytest.raises(ValueError, match="DEQ"):
        W.launch(torch.randn(1, 128).half(), qw, s, z, 128, {**cfg, "DEQ": "fast"})
    with pytest.raises(ValueError, match="tensor-core"):
        W.launch(torch.randn(1, 128).half(), qw, s, z, 128, {**cfg, "DEQ": "ints", "USE_DOT": False, "BLOCK_M": 1})


# the inline-PTX path on a GPU: every path, both activation dtypes (bf16 uses 128.0 as the magic,
# fp16 1024.0), against the reference and bit for bit against its integer twin. (Every candidate of
# the sweep is checked against the reference by bench/quant_gemm.py before it is timed.)
_B, _H = torch.bfloat16, torch.float16
LOP3_CASES = [  # (M, N, K, config, activation dtype); each case compiles up to 4 kernels
    (1, 4096, 4096, dict(BLOCK_M=16, BLOCK_N=128, SPLIT_K=8, USE_DOT=True, REDUCE="last"), _B),
    (1, 4096, 4096, dict(BLOCK_M=16, BLOCK_N=128, SPLIT_K=8, USE_DOT=True, REDUCE="last"), _H),
    (1, 1000, 1088, dict(BLOCK_M=16, BLOCK_N=64, SPLIT_K=2, USE_DOT=True, REDUCE="atomic"), _B),
    (1, 512, 2048, dict(BLOCK_M=1, BLOCK_N=32, SPLIT_K=4, USE_DOT=False, REDUCE="last"), _B),
    (13, 768, 1024, dict(BLOCK_M=16, BLOCK_N=128, SPLIT_K=4, USE_DOT=True, REDUCE="last"), _B),
    (200, 1024, 2048, dict(BLOCK_M=64, BLOCK_N=128, SPLIT_K=2, USE_DOT=True, REDUCE="last"), _B),
    (200, 1024, 2048, dict(BLOCK_M=64, BLOCK_N=128, SPLIT_K=2, USE_DOT=True, REDUCE="last"), _H),
    (256, 520, 1024, dict(BLOCK_M=128, BLOCK_N=128, SPLIT_K=1, USE_DOT=True, num_warps=8), _B),
]


@pytest.mark.skipif(not torch.cuda.is_available() or W.interpreting(), reason="inline PTX needs a CUDA GPU")
@pytest.mark.parametrize("m,n,k,cfg,dt", LOP3_CASES)
def test_lop3_dequant_on_gpu(m, n, k, cfg, dt):
    torch.manual_seed(m + n + k)
    w = torch.randn(n, k, device="cuda") * 0.05
    qw = quantize_rtn(w, 128)
    ops = (qw.qweight, qw.scales, qw.zeros)
    x = torch.randn(m, k, device="cuda").to(dt)
    ref = W.w4a16_reference(x.float(), *ops, 128)
    outs = {}
    for deq in ("lop3", "int", "lop3s", "ints"):
        if deq.endswith("s") and not cfg["USE_DOT"]:
            continue
        c = {"num_warps": 4, "num_stages": 3, **cfg, "DEQ": deq}
        for call in range(2):  # the second call reuses the split-K counters the first one reset
            out = torch.full((m, n), float("nan"), dtype=dt, device="cuda")
            y = W.launch(x, *ops, 128, c, out=out)
            assert not torch.isnan(y).any(), (deq, call)
            err = ((y.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, (deq, call, err)
        outs[deq] = y
    if cfg.get("SPLIT_K", 1) == 1 or cfg.get("REDUCE") == "last":  # fp32 atomics sum in any order
        assert torch.equal(outs["lop3"], outs["int"])  # same 16-bit operands, same dots
        if cfg["USE_DOT"]:
            assert torch.equal(outs["lop3s"], outs["ints"])
