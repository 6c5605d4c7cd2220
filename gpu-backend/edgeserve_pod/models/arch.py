"""ModelArch: the shape of a Llama-family decoder, read from an HF config.json and checked."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

SUPPORTED = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


@dataclass(frozen=True)
class ModelArch:
    family: str  # "llama" | "qwen2"
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_folder(cls, folder: str) -> "ModelArch":
        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        archs = c.get("architectures") or []
        family = next((SUPPORTED[a] for a in archs if a in SUPPORTED), None)
        if family is None:
            raise ValueError(f"unsupported architectures {archs!r} in {folder}/config.json; supported: {sorted(SUPPORTED)}")
        # transformers >= 5 writes rope settings under rope_parameters; older ones at top level
        rp = c.get("rope_parameters") or {}
        theta = rp.get("rope_theta", c.get("rope_theta", 10000.0))
        scaling = c.get("rope_scaling")
        if scaling is None and rp.get("rope_type", "default") != "default":
            scaling = rp
        heads = c["num_attention_heads"]
        eos = c.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
        arch = cls(
            family=family,
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            vocab_size=c["vocab_size"],
            rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_position_embeddings=c.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2" or bool(c.get("attention_bias", False)),
            eos_token_ids=eos_ids,
        )
        if arch.num_heads % arch.num_kv_heads:
            raise ValueError(f"num_attention_heads {arch.num_heads} is not a multiple of num_key_value_heads {arch.num_kv_heads}")
        return arch
