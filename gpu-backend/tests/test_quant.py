"""Quantizer: RTN group quantization, SmoothQuant+ smoothing (exact before quantization; on a
model with outlier channels it picks an alpha that beats RTN, and its reported errors are those of
the smoothed model), the quantized checkpoint, and the engine loading it."""

from __future__ import annotations

import json
import os

import pytest
import torch

from edgeserve_pod.quant import checkpoint
from edgeserve_pod.quant.calibrate import calibrate
from edgeserve_pod.quant.llama_torch import TorchLlama, load_hf
from edgeserve_pod.quant.quantize import QuantizeConfig, main as quantize_main, quantize
from edgeserve_pod.quant.rtn import fake_quantize, quantize_codes, quantize_rtn
from edgeserve_pod.quant.smoothquant import (output_error, search_alpha, search_clip, smooth_model, smooth_scales,
                                             smoothed_quantized)


def test_rtn_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(32, 200) * torch.logspace(-2, 1, 200)  # uneven columns, ragged last group
    codes, s, z = quantize_codes(w, 128)
    assert codes.max() <= 15 and s.shape == (32, 2) and z.shape == (32, 2)
    dq = quantize_rtn(w, 128).dequantize()
    step = s.float().repeat_interleave(128, 1)[:, :200]
    assert ((dq - w).abs() <= step / 2 + 1e-6).all()
    torch.testing.assert_close(dq, fake_quantize(w, 128))
    clip = torch.full((32, 2), 0.8)  # a clipped range: codes still in [0, 15], the packed form agrees
    torch.testing.assert_close(quantize_rtn(w, 128, clip).dequantize(), fake_quantize(w, 128, clip))
    assert not torch.equal(fake_quantize(w, 128, clip), dq)


def test_rtn_rejects_bad_weights():
    with pytest.raises(ValueError, match="NaN"):
        quantize_rtn(torch.tensor([[float("nan")] * 8]), 128)
    with pytest.raises(ValueError, match="multiple of 128"):
        quantize_rtn(torch.randn(4, 256), 64)


def test_alpha_search_handles_an_outlier_channel():
    torch.manual_seed(1)
    x = torch.randn(256, 256)
    x[:, 7] *= 60  # one activation outlier channel, as in real LLM norms outputs
    w = torch.randn(64, 256) * 0.05
    gram = x.t() @ x
    err = lambda s: output_error(gram, w, smoothed_quantized(w, s, 128))  # noqa: E731
    a, s, errs = search_alpha(err, lambda a: smooth_scales(x.abs().amax(0), w, a))
    assert min(errs.values()) == (errs["none"] if a is None else errs[str(a)])
    assert a is not None and errs[str(a)] < 0.8 * errs["none"]
    # smoothing is exact before quantization
    torch.testing.assert_close((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-4, atol=1e-3)
    # the Gram form of the error is the error of the smoothed, quantized product on the rows
    y = x @ w.t()
    direct = float(((x / s) @ fake_quantize(w * s, 128).t() - y).pow(2).sum() / y.pow(2).sum())
    assert errs[str(a)] == pytest.approx(direct, rel=1e-3)


def test_clip_search_never_loses_and_clips_an_outlier_weight():
    torch.manual_seed(2)
    x = torch.randn(512, 256)
    w = torch.randn(32, 256) * 0.02
    w[3, 10] = 0.5  # one large weight stretches its group's range
    gram = x.t() @ x
    clip = search_clip(gram, w, 128)
    assert clip.shape == (32, 2) and bool(((clip > 0) & (clip <= 1)).all())
    assert clip[3, 0] < 1  # the stretched group is clipped
    y = x @ w.t()
    err = lambda wq: float((x @ wq.t() - y).pow(2).sum(0)[3])  # noqa: E731  row 3's output error
    assert err(fake_quantize(w, 128, clip)) < err(fake_quantize(w, 128))
    # per row and group the chosen ratio is at least as good as no clipping on its own objective
    full = output_error(gram, w, fake_quantize(w, 128, clip))
    assert full <= output_error(gram, w, fake_quantize(w, 128)) * 1.0001


_GROUPS = {"qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")), "o": ("self_attn", ("o_proj",)),
           "gate_up": ("mlp", ("gate_proj", "up_proj")), "down": ("mlp", ("down_proj",))}


def _outlier_model(path):
    """The tiny model with one outlier input channel at each norm's output (as real LLMs have),
    so that the qkv and gate_up groups have something to smooth; calibrated on random tokens."""
    model = TorchLlama.from_folder(path)
    for L in model.layers:
        L.input_layernorm[7] *= 40
        L.post_attention_layernorm[11] *= 40
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (2, 32), generator=g) for _ in range(2)]
    return model, batches


def _as_searched(model, orig, i):
    """Layer i's weights per group as the search saw them: (modules, W, Q(W), row scales r), with
    the model's weight = W / r. The scales are read off the weights (smoothed / original), not
    taken from the search: o_proj's and down_proj's columns carry their group's s. The folds of o
    and down divide v_proj's and up_proj's rows by s after qkv and gate_up were searched, so those
    rows are multiplied back (r = s) before they are quantized; every other r is 1."""
    L, L0 = model.layers[i], orig.layers[i]
    H, Hkv, d = model.H, model.Hkv, model.d
    s_o = (L.self_attn.o_proj.weight / L0.self_attn.o_proj.weight)[0]  # (H * d,)
    s_kv = s_o.view(Hkv, H // Hkv, d)[:, 0].reshape(-1, 1)  # v_proj rows
    s_down = (L.mlp.down_proj.weight / L0.mlp.down_proj.weight)[0].reshape(-1, 1)  # up_proj rows
    rows = {"v_proj": s_kv, "up_proj": s_down}
    out = {}
    for grp, (parent, names) in _GROUPS.items():
        mods = [getattr(getattr(L, parent), n) for n in names]
        r = [rows.get(n, torch.ones(1, 1)) for n in names]
        w = [m.weight * ri for m, ri in zip(mods, r)]
        out[grp] = (mods, w, [fake_quantize(wi, 128) for wi in w], r)
    return out


def _check_report(report, groups):
    """Smoothing must pick an alpha for the groups fed by the outlier channel and cut RTN's
    error there by at least half."""
    for key, e in report.items():
        assert set(e) == {"alpha", "error", "error_rtn"}
        if key.split(".")[2] in groups:
            assert e["alpha"] is not None, key
            assert e["error"] < 0.5 * e["error_rtn"], (key, e)


def test_smoothing_folds_exactly(tiny_model):
    model, batches = _outlier_model(tiny_model)
    orig, _ = _outlier_model(tiny_model)
    before = model(batches[0])
    cal = calibrate(model, batches, n_samples=64)
    assert set(cal.act_max) == {f"layers.{i}.{g}" for i in range(2) for g in ("qkv", "o", "gate_up", "down")}
    report, clips = smooth_model(model, cal, 128, grid=(0.25, 0.5, 0.75))  # weights change, the function must not
    torch.testing.assert_close(model(batches[0]), before, rtol=1e-3, atol=1e-3)
    assert clips == {}
    _check_report(report, ("qkv", "gate_up"))
    # each reported error is the output error of the smoothed model's quantized weights, on the
    # Gram matrix of a fresh calibration of the smoothed model (its inputs are X / s)
    cal2 = calibrate(model, batches, n_samples=64)
    for i in range(2):
        for grp, (_, w, wq, _) in _as_searched(model, orig, i).items():
            e = output_error(cal2.gram[f"layers.{i}.{grp}"], torch.cat(w, 0), torch.cat(wq, 0))
            assert report[f"layers.{i}.{grp}"]["error"] == pytest.approx(e, rel=1e-4), (i, grp)


def test_every_fold_is_exact(tiny_model):
    """Each group's fold (norm, v_proj rows with the GQA tie, up_proj rows) with arbitrary scales."""
    from edgeserve_pod.quant.smoothquant import _fold

    model = TorchLlama.from_folder(tiny_model)
    row = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(5))
    before = model(row)
    g = torch.Generator().manual_seed(6)
    H, Hkv, d = model.H, model.Hkv, model.d
    D, inter = model.c["hidden_size"], model.c["intermediate_size"]
    for L in model.layers:
        for grp, k in (("qkv", D), ("gate_up", D), ("down", inter)):
            _fold(model, L, grp, torch.rand(k, generator=g) * 3 + 0.2)
        s_kv = torch.rand(Hkv, 1, d, generator=g) * 3 + 0.2
        _fold(model, L, "o", s_kv.expand(Hkv, H // Hkv, d).reshape(-1))
    assert not torch.equal(model.layers[0].self_attn.v_proj.weight, TorchLlama.from_folder(tiny_model).layers[0].self_attn.v_proj.weight)
    torch.testing.assert_close(model(row), before, rtol=1e-4, atol=1e-4)


def test_block_objective_folds_exactly_and_clips(tiny_model):
    from edgeserve_pod.quant.smoothquant import _Swap

    model, batches = _outlier_model(tiny_model)
    orig, _ = _outlier_model(tiny_model)
    before = model(batches[0])
    cal = calibrate(model, batches, n_samples=64)
    inputs = []
    model(batches[1], layer_inputs=inputs)
    assert len(inputs) == 2 and inputs[0].shape == (2, 32, model.c["hidden_size"])
    report, clips = smooth_model(model, cal, 128, grid=(0.25, 0.5, 0.75), objective="block", clip=True,
                                 block_inputs=inputs)
    torch.testing.assert_close(model(batches[0]), before, rtol=1e-3, atol=1e-3)
    assert len(clips) == 2 * 7 and all(bool(((c > 0) & (c <= 1)).all()) for c in clips.values())
    _check_report(report, ("qkv", "gate_up"))
    # each reported error is the block's output error recomputed on the smoothed model: the group
    # quantized without clipping, the block's earlier group (qkv before o, gate_up before down) as
    # chosen, i.e. with its clip ratios; the reference is the smoothed model's own block output
    for i, x in enumerate(inputs):
        L, rot = model.layers[i], model.rotary(x.shape[1])
        ref_attn = model.attn_block(L, x, rot)
        ref_mlp = model.mlp_block(L, x + ref_attn)
        sw = _as_searched(model, orig, i)
        for grp, earlier in (("qkv", None), ("o", "qkv"), ("gate_up", None), ("down", "gate_up")):
            mods, _, wq, r = sw[grp]
            weights = [q / ri for q, ri in zip(wq, r)]
            if earlier:
                emods, ew, _, er = sw[earlier]
                mods = list(mods) + list(emods)
                weights += [fake_quantize(w, 128, clips[f"model.layers.{i}.{_GROUPS[earlier][0]}.{m}"]) / ri
                            for w, m, ri in zip(ew, _GROUPS[earlier][1], er)]
            with _Swap(mods, weights):
                out = model.attn_block(L, x, rot) if grp in ("qkv", "o") else model.mlp_block(L, x + ref_attn)
            ref = ref_attn if grp in ("qkv", "o") else ref_mlp
            e = float((out - ref).pow(2).sum() / ref.pow(2).sum())
            assert report[f"layers.{i}.{grp}"]["error"] == pytest.approx(e, rel=1e-4), (i, grp)
    with pytest.raises(ValueError, match="block_inputs"):
        smooth_model(model, cal, 128, objective="block")


def test_checkpoint_roundtrip_and_engine_load(tiny_model, tmp_path):
    out = str(tmp_path / "rtn")
    man = quantize(QuantizeConfig(tiny_model, out, "rtn"), log=lambda s: None)
    assert man["method"] == "rtn"
    m = checkpoint.read_manifest(out)
    assert m["group_size"] == 128 and m["format"] == checkpoint.FORMAT
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["quantization_config"]["bits"] == 4
    # the checkpoint's dequantized weights are RTN of the source
    _, src = load_hf(tiny_model)
    _, deq = checkpoint.load_dequantized(out)
    w = src["model.layers.1.mlp.down_proj.weight"]
    torch.testing.assert_close(deq["model.layers.1.mlp.down_proj.weight"], fake_quantize(w, 128))
    # the engine (CPU, W4A16 reference path) computes what the dequantized torch model computes
    from edgeserve_pod.quant.perplexity import make_runner, row_nll

    runner = make_runner(out, "w4a16", "auto", 64)
    row = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(3))
    nll_engine, n = row_nll(runner, row)
    ref = TorchLlama(*checkpoint.load_dequantized(out))(row[None])[0, :-1]
    nll_ref = float(torch.nn.functional.cross_entropy(ref, row[1:], reduction="sum"))
    assert n == 39 and nll_engine == pytest.approx(nll_ref, rel=1e-4)
    with pytest.raises(ValueError, match="w4a16"):  # a 4-bit folder without --quantization w4a16
        make_runner(out, None, "auto", 64)


def test_engine_load_checks_the_manifest(tiny_model, tmp_path):
    """The loader reads quantization.json before any tensor: a group size the engine's W4A16
    layers do not use (with K >= 256 it was a bare scales shape error, with the tiny model's
    K = 64 it loaded silently), an unknown method or bit width, or 4-bit tensors without a
    manifest fail with a ValueError naming the field."""
    import shutil

    from edgeserve_pod.quant.perplexity import make_runner

    g256 = str(tmp_path / "g256")
    quantize(QuantizeConfig(tiny_model, g256, "rtn", group_size=256), log=lambda s: None)
    assert checkpoint.read_manifest(g256)["group_size"] == 256
    with pytest.raises(ValueError, match="group_size 256, but the engine's W4A16 layers use group_size 128"):
        make_runner(g256, "w4a16", "auto", 64)

    good = str(tmp_path / "good")
    quantize(QuantizeConfig(tiny_model, good, "rtn"), log=lambda s: None)
    make_runner(good, "w4a16", "auto", 64)  # loads

    def edited(name, **fields):
        d = str(tmp_path / name)
        shutil.copytree(good, d)
        path = os.path.join(d, checkpoint.MANIFEST)
        m = {**json.load(open(path)), **fields}
        json.dump({k: v for k, v in m.items() if v is not None}, open(path, "w"))
        return d

    with pytest.raises(ValueError, match="method 'awq' is not one"):
        make_runner(edited("awq", method="awq"), "w4a16", "auto", 64)
    with pytest.raises(ValueError, match="bits 8"):
        make_runner(edited("bits", bits=8), "w4a16", "auto", 64)
    with pytest.raises(ValueError, match="format 'other'"):
        make_runner(edited("fmt", format="other"), "w4a16", "auto", 64)
    with pytest.raises(ValueError, match="group_size None"):
        make_runner(edited("nogroup", group_size=None), "w4a16", "auto", 64)
    # a folder written by checkpoint.write with only a method (bench/pod_engine.py's RTN speed
    # checkpoint) states bits and zero_point itself and loads
    from safetensors.torch import load_file

    raw = load_file(os.path.join(tiny_model, "model.safetensors"))
    q = {n[:-len(".weight")]: quantize_rtn(t, 128) for n, t in raw.items()
         if n.endswith(".weight") and n[:-len(".weight")].split(".", 3)[-1] in checkpoint.PROJ}
    plain = {n: t for n, t in raw.items() if n[:-len(".weight")] not in q}
    direct = str(tmp_path / "direct")
    checkpoint.write(direct, json.load(open(os.path.join(tiny_model, "config.json"))), plain, q, {"method": "rtn"})
    make_runner(direct, "w4a16", "auto", 64)
    bare = str(tmp_path / "bare")
    shutil.copytree(good, bare)
    os.remove(os.path.join(bare, checkpoint.MANIFEST))
    with pytest.raises(ValueError, match="qweight.*no quantization.json"):
        make_runner(bare, "w4a16", "auto", 64)


def test_dequantized_folder_for_small_groups(tiny_model, tmp_path):
    """group 64 is not a W4A16 checkpoint; it is written as a plain folder the engine runs unquantized."""
    out = str(tmp_path / "g64")
    with pytest.raises(ValueError, match="multiple of 128"):
        QuantizeConfig(tiny_model, out, "rtn", group_size=64)
    quantize(QuantizeConfig(tiny_model, out, "rtn", group_size=64, dequantized=True), log=lambda s: None)
    assert not os.path.exists(os.path.join(out, checkpoint.MANIFEST))
    _, src = load_hf(tiny_model)
    _, deq = load_hf(out)
    w = src["model.layers.0.self_attn.o_proj.weight"]
    torch.testing.assert_close(deq["model.layers.0.self_attn.o_proj.weight"], fake_quantize(w, 64))
    from edgeserve_pod.quant.perplexity import make_runner, row_nll

    row = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(4))
    nll, _ = row_nll(make_runner(out, None, "auto", 64), row)
    ref = TorchLlama(*load_hf(out))(row[None])[0, :-1]
    assert nll == pytest.approx(float(torch.nn.functional.cross_entropy(ref, row[1:], reduction="sum")), rel=1e-4)


def test_cli_rejects_bad_arguments(tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit):
        quantize_main(["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--method", "rtn"])
    assert "HF folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # smoothquant+ needs a tokenizer for the calibration text
        quantize_main(["--model", tiny_model, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        quantize_main(["--model", tiny_model, "--out", str(tmp_path / "o"), "--method", "gptq"])


def test_gptq_beats_rtn_on_the_output_and_packs():
    from edgeserve_pod.quant.gptq import gptq_fake, quantize_gptq, quantize_gptq_group

    torch.manual_seed(3)
    x = torch.randn(1024, 256) @ (torch.randn(256, 256) * 0.2 + torch.eye(256))  # correlated input channels
    w = torch.randn(48, 256) * 0.05
    gram = x.t() @ x
    wq = gptq_fake(w, gram, 128)
    assert output_error(gram, w, wq) < 0.7 * output_error(gram, w, fake_quantize(w, 128))
    qw = quantize_gptq(w, gram, 128)
    torch.testing.assert_close(qw.dequantize(), wq)
    assert qw.scales.shape == (2, 48) and int(qw.zeros.max()) <= 15
    # weights sharing one input are done in one pass; stacking rows changes nothing
    w2 = torch.randn(16, 256) * 0.05
    a, b = quantize_gptq_group([w, w2], gram, 128, [None, torch.full((16, 2), 0.9)])
    torch.testing.assert_close(a.dequantize(), wq)
    torch.testing.assert_close(b.dequantize(), gptq_fake(w2, gram, 128, torch.full((16, 2), 0.9)))
