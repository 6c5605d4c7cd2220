"""Block reconstruction that moves the 4-bit codes (quant/blockwise.py, ReconConfig(codes=True)):
straight-through rounding on each group's fixed grid, on the tiny random model, CPU."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from edgeserve_pod.kernels.w4a16 import pack_int4, unpack_int4
from edgeserve_pod.quant import bpe, checkpoint
from edgeserve_pod.quant.blockwise import ReconConfig, _LearnedScales, reconstruct
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama, load_hf
from edgeserve_pod.quant.quantize import QuantizeConfig, quantize
from edgeserve_pod.quant.rtn import QuantizedWeight, quantize_rtn
from test_quant_blockwise import _ByteTokenizer, block0_error, rows, rtn_model

QUIET = dict(log=lambda s: None)


def codes_of(quantized) -> dict[str, torch.Tensor]:
    return {k: unpack_int4(q.qweight, q.in_features) for k, q in quantized.items()}


def test_codes_move_on_the_grid_and_every_block_objective_drops(tiny_model):
    model, quantized = rtn_model(tiny_model)
    teacher = TorchLlama(*load_hf(tiny_model))
    c0 = codes_of(quantized)
    z0 = {k: q.zeros.clone() for k, q in quantized.items()}
    r = rows()
    rep = reconstruct(model, quantized, r, ReconConfig(steps=40, lr=5e-3, codes=True, codes_lr=5e-2), **QUIET)
    for e in rep.values():
        assert e["kept"] and e["objective_after"] < e["objective_before"]
    assert block0_error(model, teacher, r) == pytest.approx(rep["layers.0"]["objective_after"], rel=1e-4)
    moved = 0
    for k, q in quantized.items():
        c = unpack_int4(q.qweight, q.in_features)
        assert c.shape == c0[k].shape and torch.equal(q.zeros, z0[k])
        moved += int((c != c0[k]).sum())
        i, proj = int(k.split(".")[2]), k.split(".", 3)[3]
        lin = getattr(getattr(model.layers[i], proj.split(".")[0]), proj.split(".")[1])
        assert torch.equal(lin.weight, q.dequantize())  # the model runs exactly the stored checkpoint
    assert moved == sum(e["codes_moved"] for e in rep.values())
    assert moved > 0.02 * sum(c.numel() for c in c0.values())  # measured: 18% of the codes


def test_the_moved_codes_carry_part_of_the_gain(tiny_model):
    """Put the rounding's codes back under the tuned scales and norms: block 0's objective rises
    (fails if the codes stage is a no-op, or its codes are not the ones written)."""
    model, quantized = rtn_model(tiny_model)
    teacher = TorchLlama(*load_hf(tiny_model))
    c0 = codes_of(quantized)
    r = rows()
    rep = reconstruct(model, quantized, r, ReconConfig(steps=40, lr=5e-3, codes=True, codes_lr=5e-2), **QUIET)
    assert [st["codes"] for st in rep["layers.0"]["stages"]] == [False, True] and rep["layers.0"]["stages"][1]["kept"]
    tuned = block0_error(model, teacher, r)
    assert tuned == pytest.approx(rep["layers.0"]["objective_after"], rel=1e-4)
    for p in PROJ:
        q = quantized[f"model.layers.0.{p}"]
        lin = getattr(getattr(model.layers[0], p.split(".")[0]), p.split(".")[1])
        lin.weight = torch.nn.Parameter(QuantizedWeight(pack_int4(c0[f"model.layers.0.{p}"][:, :q.in_features]), q.scales,
                                                        q.zeros, q.group_size, q.in_features).dequantize(), requires_grad=False)
    assert block0_error(model, teacher, r) > 1.3 * tuned  # measured: 1.8x


def test_code_moving_step_never_keeps_a_worse_block(tiny_model):
    model, quantized = rtn_model(tiny_model)
    q0 = {k: (q.qweight.clone(), q.scales.clone()) for k, q in quantized.items()}
    rep = reconstruct(model, quantized, rows(), ReconConfig(steps=5, lr=3.0, codes=True, codes_lr=20.0), **QUIET)
    for e in rep.values():
        assert not e["kept"] and e["codes_moved"] == 0
        assert e["objective_after"] == pytest.approx(e["objective_before"], rel=1e-6)
    for k, q in quantized.items():
        assert torch.equal(q.qweight, q0[k][0]) and torch.equal(q.scales, q0[k][1])


def test_learned_codes_are_integers_in_range_with_a_straight_through_gradient():
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    m = _LearnedScales(quantize_rtn(w), None, codes=True)
    with torch.no_grad():
        m.v.copy_(torch.randn(m.v.shape, generator=torch.Generator().manual_seed(1)) * 20)  # far past both ends
    c = m.codes()
    assert torch.equal(c, c.round()) and int(c.min()) == 0 and int(c.max()) == 15
    m.codes().sum().backward()
    inside = ((m.q0 + m.v) > 0) & ((m.q0 + m.v) < 15)
    assert torch.equal(m.v.grad, inside.float())  # 1 through the rounding, 0 where clamped


def test_token_loss_is_per_token(tiny_model):
    """loss='token' reports the per-token relative error, recomputed here."""
    model, quantized = rtn_model(tiny_model)
    teacher = TorchLlama(*load_hf(tiny_model))
    r = rows()
    rep = reconstruct(model, quantized, r, ReconConfig(steps=10, lr=5e-3, codes=True, codes_lr=5e-2, loss="token"),
                      **QUIET)
    want = block0_error(model, teacher, r, per_token=True)
    assert rep["layers.0"]["objective_after"] == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="loss"):
        ReconConfig(loss="channel")


def test_quantize_with_code_moving_recon_loads_in_the_engine(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(bpe.BPETokenizer, "from_gguf", classmethod(lambda cls, path: _ByteTokenizer()))
    out, pre = str(tmp_path / "recon"), str(tmp_path / "pre")
    cfg = QuantizeConfig(tiny_model, out, "smoothquant+", tokenizer=os.path.join(tiny_model, "config.json"),
                         calib_rows=16, seq_len=32, clip=True, recon_steps=40, recon_rows=12, recon_codes=True,
                         recon_codes_lr=2e-2, recon_val_rows=4, recon_eval_rows=8)
    man = quantize(cfg, log=lambda s: None, before_recon_out=pre)
    assert man["block_recon"]["rows"] == 12 and man["block_recon"]["val_rows"] == 4
    for e in man["block_recon"]["layers"].values():
        assert e["objective_after"] <= e["objective_before"] and e["val_after"] <= e["val_before"]
        for st in e["stages"]:  # the keep rule: lower on the training rows and on the held-aside rows
            new = st.get("rejected", {"objective": st["objective_after"], "val": st["val_after"]})
            assert st["kept"] == (new["objective"] < st["objective_before"] and new["val"] < st["val_before"])
    assert checkpoint.read_manifest(out)["refinements"]["block_recon"]["codes"] is True
    from safetensors.torch import load_file

    a, b = load_file(os.path.join(pre, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    moved = sum(int((unpack_int4(a[k], 128) != unpack_int4(b[k], 128)).sum()) for k in a if k.endswith(".qweight"))
    assert moved == sum(e["codes_moved"] for e in man["block_recon"]["layers"].values()) > 0
    from edgeserve_pod.quant.perplexity import make_runner, row_nll

    row = rows(1, 40, seed=3)[0]
    nll, _ = row_nll(make_runner(out, "w4a16", "auto", 64), row)  # the engine (W4A16 reference path)
    ref = TorchLlama(*checkpoint.load_dequantized(out))(row[None])[0, :-1]
    assert nll == pytest.approx(float(F.cross_entropy(ref, row[1:], reduction="sum")), rel=1e-4)
