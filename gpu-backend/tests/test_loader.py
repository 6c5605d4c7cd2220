"""The loader refuses a checkpoint that leaves a parameter out (it would stay as allocated:
uninitialised memory, or ones for a norm) and names the first one missing; an lm_head may be
absent only when the config ties it to the embeddings."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_engine
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
    out = {}
    for kind in ("tiny", "tiny-qwen2"):
        d = write_random_checkpoint(kind, str(tmp_path_factory.mktemp(kind)), seed=0, dtype=torch.float32)
        out[kind] = (d, load_file(os.path.join(d, "model.safetensors")))
    return out


def checkpoint(tmp_path, src: str, tensors: dict, drop: str = "", **config) -> str:
    """A copy of the checkpoint without the tensors whose names start with `drop`."""
    with open(os.path.join(src, "config.json")) as f:
        cfg = {**json.load(f), **config}
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    save_file({k: v for k, v in tensors.items() if not (drop and k.startswith(drop))}, str(tmp_path / "model.safetensors"))
    return str(tmp_path)


@pytest.mark.parametrize("kind, drop, first_missing", [
    ("tiny", "model.layers.1.", "model.layers.1.input_layernorm.weight"),  # a whole layer
    ("tiny", "model.norm.weight", "model.norm.weight"),
    ("tiny", "model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("tiny", "model.layers.0.post_attention_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"),
    ("tiny", "model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"),
    ("tiny", "model.layers.0.self_attn.", "model.layers.0.self_attn.q_proj.weight"),
    ("tiny", "lm_head.weight", "lm_head.weight"),  # untied: the head is needed
    ("tiny-qwen2", "model.layers.1.self_attn.k_proj.bias", "model.layers.1.self_attn.k_proj.bias"),
])
def test_missing_parameter_is_named(tensors, tmp_path, kind, drop, first_missing):
    src, t = tensors[kind]
    assert any(k.startswith(drop) for k in t)
    with pytest.raises(ValueError, match="no " + first_missing.replace(".", r"\.") + r"\b"):
        make_engine(checkpoint(tmp_path, src, t, drop))


def test_complete_checkpoint_loads(tensors, tmp_path):
    src, t = tensors["tiny"]
    make_engine(checkpoint(tmp_path, src, t))


def test_tied_embeddings_need_no_lm_head(tensors, tmp_path):
    src, t = tensors["tiny"]
    eng = make_engine(checkpoint(tmp_path, src, t, "lm_head.weight", tie_word_embeddings=True))
    model = eng.runner.model
    assert torch.equal(model.lm_head, model.embed_tokens)
