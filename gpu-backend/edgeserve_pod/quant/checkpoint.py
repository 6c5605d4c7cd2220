"""Quantized checkpoint: an HF-layout folder whose linear projections are stored 4-bit.

    config.json            the source's, plus "quantization_config" (method, bits, group size)
    model.safetensors      every non-projection tensor as in the source (norm weights smoothed),
                           and per projection P (q/k/v/o_proj, gate/up/down_proj):
                             P.qweight (Kp/8, N) int32, P.scales (ng, N) float16, P.zeros (ng, N) uint8
                           (layout: kernels/w4a16.py)
    quantization.json      the manifest: method, group size, per-layer migration strength alpha,
                           the source folder, the calibration text, what was done per projection

The engine loads it with `quantization="w4a16"` (models/loader.py hands the per-projection
tensors here: `finish_quantized_layer`).
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file

from edgeserve_pod.kernels.w4a16 import dequantize
from edgeserve_pod.models.hf_folder import save_hf_folder
from edgeserve_pod.quant.rtn import QuantizedWeight

FORMAT = "edgeserve-w4a16"
MANIFEST = "quantization.json"
METHODS = ("smoothquant+", "rtn")  # how the weights were made; the stored format is the same
PARTS = ("qweight", "scales", "zeros")
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def write(out_dir: str, config: dict, plain: dict[str, torch.Tensor], quantized: dict[str, QuantizedWeight],
          manifest: dict) -> None:
    """plain: name -> tensor (kept as is); quantized: 'model.layers.i.self_attn.q_proj' -> weight."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in plain.items()}
    group = None
    for prefix, q in quantized.items():
        tensors[prefix + ".qweight"] = q.qweight.contiguous()
        tensors[prefix + ".scales"] = q.scales.contiguous()
        tensors[prefix + ".zeros"] = q.zeros.contiguous()
        group = q.group_size
    cfg = dict(config)
    cfg["quantization_config"] = {"quant_method": FORMAT, "bits": 4, "group_size": group, "zero_point": True,
                                  "method": manifest.get("method")}
    save_hf_folder(out_dir, tensors, cfg)
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        # the format this writer produces (4-bit codes with zero points) is stated by the writer, so
        # a caller's manifest (e.g. bench/pod_engine.py's RTN speed checkpoint) cannot leave it out
        json.dump({"format": FORMAT, "bits": 4, "zero_point": True, "group_size": group, **manifest}, f, indent=2)


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"{folder!r} has no {MANIFEST}: not a quantized checkpoint")
    with open(path) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    return m


def check_loadable(folder: str, group_size: int | None) -> dict:
    """The manifest of a quantized folder the engine is about to load, checked field by field
    against what the loader and the W4A16 layers assume. group_size: the engine's W4A16 layers'
    group size, or None when the engine was not started with quantization='w4a16'. Raises a
    ValueError naming the field; returns the manifest."""
    m = read_manifest(folder)  # format
    path = os.path.join(folder, MANIFEST)
    if group_size is None:
        raise ValueError(f"{path}: the checkpoint is 4-bit but the engine was not started with quantization='w4a16'")
    if m.get("method") not in METHODS:
        raise ValueError(f"{path}: method {m.get('method')!r} is not one this engine loads {METHODS}")
    if m.get("bits") != 4 or m.get("zero_point") is not True:
        raise ValueError(f"{path}: bits {m.get('bits')!r}, zero_point {m.get('zero_point')!r}; the W4A16 layers "
                         "take 4-bit codes with zero points")
    if m.get("group_size") != group_size:
        raise ValueError(f"{path}: group_size {m.get('group_size')!r}, but the engine's W4A16 layers use "
                         f"group_size {group_size}")
    return m


def load_dequantized(folder: str, dtype: torch.dtype = torch.float32) -> tuple[dict, dict[str, torch.Tensor]]:
    """A quantized folder -> (config, HF-named weights) with each projection dequantized: the
    weights the W4A16 kernel multiplies by, for the plain torch forward."""
    m = read_manifest(folder)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    raw = load_file(os.path.join(folder, "model.safetensors"))
    out = {}
    for name, t in raw.items():
        prefix, _, part = name.rpartition(".")
        if part in PARTS:
            if part == "qweight":
                k = _in_features(config, prefix)
                out[prefix + ".weight"] = dequantize(t, raw[prefix + ".scales"], raw[prefix + ".zeros"],
                                                     m["group_size"], k, dtype)
        else:
            out[name] = t.to(dtype)
    return config, out


def _in_features(config: dict, prefix: str) -> int:
    D = config["hidden_size"]
    if prefix.endswith("mlp.down_proj"):
        return config["intermediate_size"]
    if prefix.endswith("self_attn.o_proj"):
        return config["num_attention_heads"] * (config.get("head_dim") or D // config["num_attention_heads"])
    return D


def finish_quantized_layer(model, i: int, p: dict[str, torch.Tensor]) -> bool:
    """Hand one layer's quantized tensors to the engine's fused projections once all have arrived.
    p: 'self_attn.q_proj.qweight' -> tensor, ... Returns False while some are missing."""
    needed = [f"{proj}.{part}" for proj in PROJ for part in PARTS]
    if not all(n in p for n in needed):
        return False
    if model.tp.size > 1:
        raise ValueError("4-bit checkpoints are loaded on one GPU only (tensor-parallel sharding of packed "
                         "weights is not implemented)")
    layer = model.layers[i]
    if not hasattr(layer.qkv_proj, "qweight"):
        raise ValueError(f"layer {i}: the checkpoint is 4-bit ({MANIFEST}) but the engine was not started "
                         "with quantization='w4a16'")
    for part in PARTS:  # fused along N, the last dimension of all three tensors
        layer.qkv_proj.load(part, torch.cat([p[f"self_attn.{x}_proj.{part}"] for x in "qkv"], 1))
        layer.o_proj.load(part, p[f"self_attn.o_proj.{part}"])
        layer.gate_up_proj.load(part, torch.cat([p[f"mlp.{x}_proj.{part}"] for x in ("gate", "up")], 1))
        layer.down_proj.load(part, p[f"mlp.down_proj.{part}"])
    if model.arch.qkv_bias:
        layer.qkv_proj.load("bias", torch.cat([p[f"self_attn.{x}_proj.bias"] for x in "qkv"], 0))
    return True
