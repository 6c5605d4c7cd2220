"""Load HF safetensors into a LlamaModel: fuse q|k|v and gate|up, shard for tensor parallel."""

from __future__ import annotations

import glob
import os
import re

import torch
from safetensors import safe_open

from edgeserve_pod.models.llama import LlamaModel

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def load_weights(model: LlamaModel, folder: str) -> None:
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise ValueError(f"no *.safetensors in {folder}")
    quantized = _check_manifest(model, folder)
    a, tp = model.arch, model.tp
    pending: dict[int, dict[str, torch.Tensor]] = {}
    seen: set[str] = set()  # names copied as they are (embeddings, norms, lm_head)
    done: set[int] = set()  # layers whose projections are loaded
    for path in files:
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if name == "model.embed_tokens.weight":
                    _copy(model.embed_tokens, t, name)
                    seen.add(name)
                elif name == "lm_head.weight":
                    if not a.tie_word_embeddings:
                        _copy(model.lm_head, t, name)
                        seen.add(name)
                elif name == "model.norm.weight":
                    _copy(model.norm.weight, t, name)
                    seen.add(name)
                elif (m := _LAYER.fullmatch(name)) is not None:
                    i, rest = int(m.group(1)), m.group(2)
                    if i >= a.num_layers:
                        raise ValueError(f"{name}: layer {i} but the config has {a.num_layers} layers")
                    layer = model.layers[i]
                    if rest == "input_layernorm.weight":
                        _copy(layer.input_layernorm.weight, t, name)
                        seen.add(name)
                    elif rest == "post_attention_layernorm.weight":
                        _copy(layer.post_attention_layernorm.weight, t, name)
                        seen.add(name)
                    elif rest.endswith("rotary_emb.inv_freq"):
                        continue
                    else:
                        pending.setdefault(i, {})[rest] = t
                        _maybe_finish_layer(model, i, pending, quantized, folder)
                        if i not in pending:
                            done.add(i)
                # unknown top-level tensors are ignored on purpose (e.g. extra heads)
    # Every parameter must come from the checkpoint: one left out would stay as allocated
    # (uninitialised memory, or ones for a norm) and the model would load without a word.
    missing = _first_missing(model, quantized, seen, done, pending)
    if missing is not None:
        if missing == "lm_head.weight":
            raise ValueError(f"{folder}: config says untied embeddings but there is no lm_head.weight")
        raise ValueError(f"{folder}: the checkpoint has no {missing}")


_NEEDED = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
           "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]


def _first_missing(model: LlamaModel, quantized: bool, seen: set[str], done: set[int],
                   pending: dict[int, dict[str, torch.Tensor]]) -> str | None:
    """The first parameter (in model order) the checkpoint did not provide, or None."""
    a = model.arch
    if "model.embed_tokens.weight" not in seen:
        return "model.embed_tokens.weight"
    for i in range(a.num_layers):
        if f"model.layers.{i}.input_layernorm.weight" not in seen:
            return f"model.layers.{i}.input_layernorm.weight"
        if i not in done:
            have = pending.get(i, {})
            return f"model.layers.{i}." + next((n for n in _layer_needed(model, quantized, have) if n not in have),
                                               "<projections>")
        if f"model.layers.{i}.post_attention_layernorm.weight" not in seen:
            return f"model.layers.{i}.post_attention_layernorm.weight"
    if "model.norm.weight" not in seen:
        return "model.norm.weight"
    if not a.tie_word_embeddings and "lm_head.weight" not in seen:  # tied: lm_head is embed_tokens
        return "lm_head.weight"
    return None


def _layer_needed(model: LlamaModel, quantized: bool, have: dict) -> list[str]:
    """The projection tensors a layer needs, in checkpoint naming."""
    bias = ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"] if model.arch.qkv_bias else []
    if quantized or any(k.endswith(".qweight") for k in have):
        from edgeserve_pod.quant.checkpoint import PARTS, PROJ

        return [f"{proj}.{part}" for proj in PROJ for part in PARTS] + bias
    return _NEEDED + bias


def _check_manifest(model: LlamaModel, folder: str) -> bool:
    """A folder with quantization.json is a 4-bit checkpoint (quant/checkpoint.py): its manifest
    must fit the engine's W4A16 layers (format, method, bits, group size), checked before any
    tensor is read."""
    from edgeserve_pod.quant.checkpoint import MANIFEST, check_loadable

    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        return False
    check_loadable(folder, getattr(model.layers[0].qkv_proj, "group_size", None) if model.layers else None)
    return True


def _maybe_finish_layer(model: LlamaModel, i: int, pending: dict, quantized: bool, folder: str) -> None:
    p = pending[i]
    if any(k.endswith(".qweight") for k in p):  # 4-bit checkpoint (quant/checkpoint.py)
        if not quantized:
            raise ValueError(f"{folder}: 4-bit tensors (model.layers.{i}.*.qweight) but no quantization.json "
                             "manifest saying how they were made")
        from edgeserve_pod.quant.checkpoint import finish_quantized_layer

        if finish_quantized_layer(model, i, p):
            del pending[i]
        return
    if not all(n in p for n in _layer_needed(model, False, p)):
        return
    a, tp, layer = model.arch, model.tp, model.layers[i]
    d = a.head_dim
    qs, qe = tp.shard(a.num_heads, "num_attention_heads")
    ks, ke = tp.shard(a.num_kv_heads, "num_key_value_heads")
    ms, me = tp.shard(a.intermediate_size, "intermediate_size")
    q = p["self_attn.q_proj.weight"][qs * d:qe * d]
    k = p["self_attn.k_proj.weight"][ks * d:ke * d]
    v = p["self_attn.v_proj.weight"][ks * d:ke * d]
    layer.qkv_proj.load("weight", torch.cat([q, k, v], 0))
    if a.qkv_bias:
        layer.qkv_proj.load("bias", torch.cat([p["self_attn.q_proj.bias"][qs * d:qe * d],
                                               p["self_attn.k_proj.bias"][ks * d:ke * d],
                                               p["self_attn.v_proj.bias"][ks * d:ke * d]], 0))
    layer.o_proj.load("weight", p["self_attn.o_proj.weight"][:, qs * d:qe * d])
    layer.gate_up_proj.load("weight", torch.cat([p["mlp.gate_proj.weight"][ms:me], p["mlp.up_proj.weight"][ms:me]], 0))
    layer.down_proj.load("weight", p["mlp.down_proj.weight"][:, ms:me])
    del pending[i]


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"{name}: expected shape {tuple(dst.shape)}, got {tuple(src.shape)}")
    with torch.no_grad():
        dst.copy_(src)
