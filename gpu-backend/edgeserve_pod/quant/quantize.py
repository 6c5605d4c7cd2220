"""Quantize an HF-layout Llama folder to a 4-bit W4A16 checkpoint (checkpoint.py).

    python -m edgeserve_pod.quant.quantize --model HF_DIR --out DIR --method smoothquant+|rtn \
        [--tokenizer GGUF] [--group-size 128] [--calib-rows 16] [--seq-len 256] [--samples 512]

smoothquant+ calibrates on real text (quant/text.py: Python's own documentation topics, the
calibration half) tokenized with the GGUF file's tokenizer, smooths (smoothquant.py), then
quantizes by round-to-nearest; rtn quantizes directly. Runs on CPU in float32.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from dataclasses import dataclass

import torch
from safetensors import safe_open

from edgeserve_pod.quant import checkpoint, text
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama, load_hf
from edgeserve_pod.quant.rtn import quantize_rtn
from edgeserve_pod.quant.smoothquant import GRID, smooth_model

METHODS = ("smoothquant+", "rtn")


@dataclass
class QuantizeConfig:
    model: str
    out: str
    method: str = "smoothquant+"
    tokenizer: str | None = None  # GGUF file whose tokenizer encodes the calibration text
    group_size: int = 128
    calib_rows: int = 16
    seq_len: int = 256
    samples: int = 512  # calibration input rows kept per linear group for the alpha search
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not os.path.isfile(os.path.join(self.model, "config.json")):
            raise ValueError(f"--model must be an HF folder with config.json, got {self.model!r}")
        if self.group_size < 128 or self.group_size % 128:
            raise ValueError(f"group_size must be a multiple of 128, got {self.group_size}")
        if self.method == "smoothquant+" and (self.tokenizer is None or not os.path.isfile(self.tokenizer)):
            raise ValueError("smoothquant+ needs --tokenizer GGUF (to tokenize the calibration text)")
        for name in ("calib_rows", "seq_len", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _source_dtypes(folder: str) -> dict[str, torch.dtype]:
    out = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(p, framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_slice(k).get_dtype()
    return out


def _dtype(name: str) -> torch.dtype:
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(name, torch.float32)


def quantize(cfg: QuantizeConfig, log=print) -> dict:
    t0 = time.time()
    config, weights = load_hf(cfg.model, torch.float32)
    src = _source_dtypes(cfg.model)
    model = TorchLlama(config, weights)
    manifest: dict = {"method": cfg.method, "bits": 4, "zero_point": True, "source": os.path.abspath(cfg.model),
                      "activation_dtype_during_calibration": "float32"}
    if cfg.method == "smoothquant+":
        from edgeserve_pod.quant.bpe import BPETokenizer
        from edgeserve_pod.quant.calibrate import calibrate

        tok = BPETokenizer.from_gguf(cfg.tokenizer)
        calib_text, _ = text.split()
        rows = text.rows(tok.encode(calib_text), cfg.seq_len, cfg.calib_rows)
        cal = calibrate(model, list(rows.split(4)), cfg.samples, cfg.seed)
        log(f"calibrated on {cal.tokens} tokens in {time.time() - t0:.0f} s")
        report = smooth_model(model, cal, cfg.group_size)
        manifest.update({
            "calibration": {"text": text.SOURCE, "split": "topics not held out (every 4th topic by name is held out)",
                            "tokenizer": os.path.abspath(cfg.tokenizer), "rows": int(rows.shape[0]),
                            "seq_len": cfg.seq_len, "tokens": cal.tokens, "samples_per_group": cfg.samples},
            "alpha_grid": list(GRID) + [None],
            "alpha_choice": "per linear group, lowest relative output error on calibration rows; None = no smoothing",
            "folding": {"qkv": "input_layernorm.weight", "gate_up": "post_attention_layernorm.weight",
                        "down": "up_proj output rows", "o": "v_proj output rows (shared by the query heads of a KV head)"},
            "layers": report,
        })
        log(f"smoothed in {time.time() - t0:.0f} s")
    quantized, plain = {}, {}
    for i, L in enumerate(model.layers):
        for proj in PROJ:
            parent, leaf = proj.split(".")
            quantized[f"model.layers.{i}.{proj}"] = quantize_rtn(getattr(getattr(L, parent), leaf).weight, cfg.group_size)
        # smoothed norms are kept in float32: the engine rounds them to its own dtype on load
        plain[f"model.layers.{i}.input_layernorm.weight"] = L.input_layernorm.detach().clone()
        plain[f"model.layers.{i}.post_attention_layernorm.weight"] = L.post_attention_layernorm.detach().clone()
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        if name in src:
            plain[name] = weights[name].to(_dtype(src[name])) if name in weights else None
    plain = {k: v for k, v in plain.items() if v is not None}
    checkpoint.write(cfg.out, config, plain, quantized, manifest)
    log(f"wrote {cfg.out} ({cfg.method}, group {cfg.group_size}) in {time.time() - t0:.0f} s")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Quantize an HF Llama folder to a 4-bit W4A16 checkpoint")
    ap.add_argument("--model", required=True, help="HF folder: config.json + *.safetensors")
    ap.add_argument("--out", required=True)
    ap.add_argument("--method", default="smoothquant+", choices=METHODS)
    ap.add_argument("--tokenizer", help="GGUF file whose tokenizer encodes the calibration text (smoothquant+)")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calib-rows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--samples", type=int, default=512)
    a = ap.parse_args(argv)
    try:
        cfg = QuantizeConfig(a.model, a.out, a.method, a.tokenizer, a.group_size, a.calib_rows, a.seq_len, a.samples)
    except ValueError as e:
        ap.error(str(e))
    quantize(cfg)


if __name__ == "__main__":
    main()
