"""Block-wise reconstruction (quant/blockwise.py) and the extra calibration text (quant/text.py),
on the tiny random model, CPU."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from edgeserve_pod.kernels.w4a16 import unpack_int4
from edgeserve_pod.quant import bpe, checkpoint, text
from edgeserve_pod.quant.blockwise import ReconConfig, reconstruct
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama, load_hf
from edgeserve_pod.quant.quantize import QuantizeConfig, quantize
from edgeserve_pod.quant.rtn import quantize_rtn


def rtn_model(folder: str):
    config, w = load_hf(folder)
    quantized = {f"model.layers.{i}.{p}": quantize_rtn(w[f"model.layers.{i}.{p}.weight"])
                 for i in range(config["num_hidden_layers"]) for p in PROJ}
    return TorchLlama(config, w), quantized


def rows(n: int = 8, t: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


def block0_error(model: TorchLlama, teacher: TorchLlama, r: torch.Tensor, per_token: bool = False) -> float:
    """The objective of block 0, recomputed here from the two models: the relative squared error per
    row (per token with `per_token`), averaged."""
    x = F.embedding(r, teacher.embed)
    rot = teacher.rotary(r.shape[1])
    with torch.no_grad():
        def run(m):
            L = m.layers[0]
            h = x + m.attn_block(L, x, rot)
            return h + m.mlp_block(L, h)
        y, out = run(teacher), run(model)
    dims = 2 if per_token else (1, 2)
    return float(((out - y).pow(2).sum(dims) / y.pow(2).sum(dims)).mean())


def test_recon_lowers_each_block_objective_and_keeps_the_grid(tiny_model):
    model, quantized = rtn_model(tiny_model)
    teacher = TorchLlama(*load_hf(tiny_model))
    before = {k: (q.qweight.clone(), q.scales.clone(), q.zeros.clone()) for k, q in quantized.items()}
    r = rows()
    rep = reconstruct(model, quantized, r, ReconConfig(steps=40, lr=5e-3), log=lambda s: None)
    assert len(rep) == 2
    for e in rep.values():  # measured: about 20% lower on both blocks
        assert e["kept"] and e["objective_after"] < 0.95 * e["objective_before"]
    # the report is the objective: block 0 recomputed from the tuned model against a fresh teacher
    assert block0_error(model, teacher, r) == pytest.approx(rep["layers.0"]["objective_after"], rel=1e-4)
    moved = 0
    for k, q in quantized.items():
        qw, s, z = before[k]
        assert torch.equal(q.qweight, qw) and torch.equal(q.zeros, z)  # codes and zero points untouched
        assert q.scales.dtype == torch.float16 and q.scales.shape == s.shape
        moved += int((q.scales != s).sum())
        # the model's weights are the stored checkpoint's weights
        i, proj = k.split(".")[2], k.split(".", 3)[3]
        lin = getattr(getattr(model.layers[int(i)], proj.split(".")[0]), proj.split(".")[1])
        assert torch.equal(lin.weight, q.dequantize())
    assert moved > 0.5 * sum(s.numel() for _, s, _ in before.values())
    assert not torch.equal(model.layers[0].input_layernorm, teacher.layers[0].input_layernorm)


def test_recon_never_keeps_a_worse_block(tiny_model):
    """A learning rate that makes Adam overshoot: the learned values are dropped, nothing changes."""
    model, quantized = rtn_model(tiny_model)
    s0 = {k: q.scales.clone() for k, q in quantized.items()}
    g0 = model.layers[1].post_attention_layernorm.detach().clone()
    rep = reconstruct(model, quantized, rows(), ReconConfig(steps=5, lr=3.0), log=lambda s: None)
    for e in rep.values():
        assert not e["kept"] and e["objective_after"] == pytest.approx(e["objective_before"], rel=1e-6)
    assert all(torch.equal(q.scales, s0[k]) for k, q in quantized.items())
    assert torch.equal(model.layers[1].post_attention_layernorm, g0)


class _ByteTokenizer:  # the tiny model's vocabulary is 256: bytes
    def encode(self, s: str) -> list[int]:
        return list(s.encode("utf-8", "replace"))


def test_quantize_with_recon_loads_in_the_engine(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(bpe.BPETokenizer, "from_gguf", classmethod(lambda cls, path: _ByteTokenizer()))
    out, pre = str(tmp_path / "recon"), str(tmp_path / "pre")
    cfg = QuantizeConfig(tiny_model, out, "smoothquant+", tokenizer=os.path.join(tiny_model, "config.json"),
                         calib_rows=8, seq_len=32, clip=True, rounding="gptq", act_order=True, recon_steps=20,
                         recon_rows=8)
    man = quantize(cfg, log=lambda s: None, before_recon_out=pre)
    assert all(e["objective_after"] <= e["objective_before"] for e in man["block_recon"]["layers"].values())
    assert checkpoint.read_manifest(out)["refinements"]["block_recon"]["steps"] == 20
    assert checkpoint.read_manifest(pre)["refinements"]["block_recon"] is None
    from safetensors.torch import load_file

    a, b = load_file(os.path.join(pre, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    n = "model.layers.0.mlp.down_proj"
    assert torch.equal(unpack_int4(a[n + ".qweight"], 128), unpack_int4(b[n + ".qweight"], 128))
    assert not torch.equal(a[n + ".scales"], b[n + ".scales"])
    assert not torch.equal(a["model.layers.0.input_layernorm.weight"], b["model.layers.0.input_layernorm.weight"])
    from edgeserve_pod.quant.perplexity import make_runner, row_nll

    row = rows(1, 40, seed=3)[0]
    for folder in (pre, out):  # the engine (W4A16 reference path) computes what the torch model computes
        nll, _ = row_nll(make_runner(folder, "w4a16", "auto", 64), row)
        ref = TorchLlama(*checkpoint.load_dequantized(folder))(row[None])[0, :-1]
        assert nll == pytest.approx(float(F.cross_entropy(ref, row[1:], reduction="sum")), rel=1e-4)


def test_recon_config_is_checked(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="dequantized"):
        QuantizeConfig(tiny_model, str(tmp_path / "x"), "rtn", tokenizer=os.path.join(tiny_model, "config.json"),
                       group_size=64, dequantized=True, recon_steps=10)
    with pytest.raises(ValueError, match="steps"):
        ReconConfig(steps=0)


def test_extra_calibration_text_drops_overlap_with_the_held_out_text(tmp_path):
    _, held = text.split()
    words = held.split()
    copied = " ".join(words[1000:1000 + text.OVERLAP_WORDS + 2])  # a run of the held-out text
    prose = "An original paragraph that appears nowhere in the documentation topics. " * 4
    (tmp_path / "a.py").write_text(f'"""{prose}"""\n\ndef f():\n    """{prose} {copied} {prose}"""\n')
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "b.py").write_text(f'"""{prose} in a test folder"""\n')
    got = text.docstrings(root=str(tmp_path))
    assert got.strip() == prose.strip()  # the module docstring only: the copy and the test folder are dropped
