"""Quantize an HF-layout Llama folder to a 4-bit W4A16 checkpoint (checkpoint.py).

    python -m edgeserve_pod.quant.quantize --model HF_DIR --out DIR --method smoothquant+|rtn \
        [--tokenizer GGUF] [--group-size 128] [--calib-rows 16] [--seq-len 256] [--samples 512] \
        [--clip] [--objective layer|block] [--scale-form max|mean] [--block-rows 4] [--rounding rtn|gptq] \
        [--act-order] [--calib-extra] [--recon-steps N] [--recon-rows 64] [--recon-lr 2e-3] [--recon-no-norms] \
        [--recon-codes] [--recon-codes-lr 2e-2] [--recon-loss row|token] [--recon-val-rows 0] [--recon-eval-rows 0]

smoothquant+ calibrates on real text (quant/text.py: Python's own documentation topics, the
calibration half) tokenized with the GGUF file's tokenizer, smooths (smoothquant.py), then
quantizes by round-to-nearest; rtn quantizes directly (with --clip it calibrates too and only
searches the clipping); --act-order (with --rounding gptq) rounds the columns in descending order
of the Hessian diagonal, with every group's scale and zero point fixed up front (gptq.py), so the
checkpoint format is unchanged. --calib-extra appends the standard library's docstrings to the
calibration text (text.calibration_text), for --calib-rows beyond what the topics fill (325 rows of
256). --recon-steps N > 0 tunes, after rounding, each block's group scales and norm weights on
its output error, block by block (blockwise.py; zeros unchanged); --recon-codes lets the 4-bit
codes move too (straight-through rounding on the fixed grid), --recon-loss token normalises the
error per token instead of per row; --recon-val-rows N holds N calibration rows out of the
reconstruction (evenly spaced among those it does not train on) and keeps a block's tuning only
if their objective drops too; --recon-eval-rows N measures the keep rule's objective on N of
the training rows. Runs on CPU in float32.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from dataclasses import dataclass

import torch
from safetensors import safe_open

from edgeserve_pod.models.hf_folder import save_hf_folder
from edgeserve_pod.quant import checkpoint, text
from edgeserve_pod.quant.blockwise import LOSSES, ReconConfig, reconstruct
from edgeserve_pod.quant.gptq import quantize_gptq_group
from edgeserve_pod.quant.llama_torch import PROJ, TorchLlama, load_hf
from edgeserve_pod.quant.rtn import fake_quantize, quantize_rtn
from edgeserve_pod.quant.smoothquant import CLIP_GRID, GRID, OBJECTIVES, SCALE_FORMS, smooth_model

METHODS = checkpoint.METHODS
ROUNDINGS = ("rtn", "gptq")
GROUP_OF = {"self_attn.q_proj": "qkv", "self_attn.k_proj": "qkv", "self_attn.v_proj": "qkv", "self_attn.o_proj": "o",
            "mlp.gate_proj": "gate_up", "mlp.up_proj": "gate_up", "mlp.down_proj": "down"}
DEQUANTIZED_MANIFEST = "dequantized-quantization.json"  # not quantization.json: the folder is 16/32-bit


@dataclass
class QuantizeConfig:
    model: str
    out: str
    method: str = "smoothquant+"
    tokenizer: str | None = None  # GGUF file whose tokenizer encodes the calibration text
    group_size: int = 128
    calib_rows: int = 16
    seq_len: int = 256
    samples: int = 512  # calibration input rows kept per linear group
    seed: int = 0
    # refinements (smoothquant.py): per-group clipping search, the alpha search's objective,
    # the form of the smoothing scales; rtn + clip = clipping without smoothing
    clip: bool = False
    objective: str = "layer"
    scale_form: str = "max"
    block_rows: int = 4  # calibration rows whose layer inputs the block objective runs on
    rounding: str = "rtn"  # or "gptq": error-compensated rounding (gptq.py) as the last step
    act_order: bool = False  # gptq only: descending Hessian-diagonal order, static groups (gptq.py)
    # write a plain HF folder of the quantize-dequantized weights (float32) instead of the 4-bit
    # checkpoint: for group sizes the W4A16 kernel does not take (64, 32), measured as a curve
    dequantized: bool = False
    calib_extra: bool = False  # calibration text = topics + stdlib docstrings (text.calibration_text)
    recon_steps: int = 0  # > 0: block-wise scale/norm reconstruction after rounding (blockwise.py)
    recon_rows: int = 64  # calibration rows (evenly spaced over all of them) the reconstruction runs on
    recon_lr: float = 2e-3
    recon_norms: bool = True
    recon_codes: bool = False  # the reconstruction also moves the 4-bit codes (blockwise.py)
    recon_codes_lr: float = 2e-2
    recon_loss: str = "row"  # or "token" (blockwise.py)
    recon_val_rows: int = 0  # calibration rows held out of the reconstruction, checked by its keep rule
    recon_eval_rows: int = 0  # > 0: the keep rule's objective on this many training rows (blockwise.py)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not os.path.isfile(os.path.join(self.model, "config.json")):
            raise ValueError(f"--model must be an HF folder with config.json, got {self.model!r}")
        if self.dequantized:
            if self.group_size < 8:
                raise ValueError(f"group_size must be at least 8, got {self.group_size}")
        elif self.group_size < 128 or self.group_size % 128:
            raise ValueError(f"group_size must be a multiple of 128 (the W4A16 kernel's K tile), got {self.group_size}")
        if self.calibrated and (self.tokenizer is None or not os.path.isfile(self.tokenizer)):
            raise ValueError(f"{self.method}{' + clip' if self.clip else ''} needs --tokenizer GGUF (to tokenize the "
                             "calibration text)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.act_order and self.rounding != "gptq":
            raise ValueError("act_order reorders GPTQ's rounding: it needs rounding='gptq'")
        if self.scale_form not in SCALE_FORMS:
            raise ValueError(f"scale_form must be one of {SCALE_FORMS}, got {self.scale_form!r}")
        if self.recon_steps < 0:
            raise ValueError(f"recon_steps must be >= 0, got {self.recon_steps}")
        if self.recon_loss not in LOSSES:
            raise ValueError(f"recon_loss must be one of {LOSSES}, got {self.recon_loss!r}")
        if self.recon_steps and self.dequantized:
            raise ValueError("block reconstruction tunes the 4-bit checkpoint's scales: not with dequantized=True")
        for name in ("recon_val_rows", "recon_eval_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.recon_steps and self.recon_val_rows >= self.calib_rows:
            raise ValueError(f"recon_val_rows {self.recon_val_rows} leaves none of the {self.calib_rows} calibration rows "
                             "to train on")
        for name in ("calib_rows", "seq_len", "samples", "block_rows", "recon_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def calibrated(self) -> bool:
        return self.method == "smoothquant+" or self.clip or self.rounding == "gptq" or self.recon_steps > 0

    def refinements(self) -> dict:
        return {"clip_search": self.clip, "objective": self.objective if self.method == "smoothquant+" else None,
                "scale_form": self.scale_form if self.method == "smoothquant+" else None, "rounding": self.rounding,
                "act_order": self.act_order, "calib_extra": self.calib_extra,
                "block_recon": ({"steps": self.recon_steps, "rows": self.recon_rows, "lr": self.recon_lr,
                                 "norms": self.recon_norms, "codes": self.recon_codes,
                                 "codes_lr": self.recon_codes_lr if self.recon_codes else None,
                                 "loss": self.recon_loss, "val_rows": self.recon_val_rows,
                                 "eval_rows": self.recon_eval_rows} if self.recon_steps else None)}


def _source_dtypes(folder: str) -> dict[str, torch.dtype]:
    out = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(p, framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_slice(k).get_dtype()
    return out


def _dtype(name: str) -> torch.dtype:
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(name, torch.float32)


def quantize(cfg: QuantizeConfig, log=print, before_recon_out: str | None = None) -> dict:
    """-> the manifest. before_recon_out: with recon_steps, also write the checkpoint as it is
    before the reconstruction (same calibration and rounding: the ablation at no extra cost)."""
    t0 = time.time()
    config, weights = load_hf(cfg.model, torch.float32)
    src = _source_dtypes(cfg.model)
    model = TorchLlama(config, weights)
    manifest: dict = {"method": cfg.method, "bits": 4, "zero_point": True, "source": os.path.abspath(cfg.model),
                      "activation_dtype_during_calibration": "float32"}
    clips: dict[str, torch.Tensor] = {}
    if cfg.calibrated:
        from edgeserve_pod.quant.bpe import BPETokenizer
        from edgeserve_pod.quant.calibrate import calibrate

        tok = BPETokenizer.from_gguf(cfg.tokenizer)
        rows = text.rows(tok.encode(text.calibration_text(cfg.calib_extra)), cfg.seq_len, cfg.calib_rows)
        cal = calibrate(model, list(rows.split(4)), cfg.samples, cfg.seed)
        log(f"calibrated on {cal.tokens} tokens in {time.time() - t0:.0f} s")
        block_inputs = None
        if cfg.method == "smoothquant+" and cfg.objective == "block":
            block_inputs = []
            model(rows[:cfg.block_rows], layer_inputs=block_inputs)
        report = {}
        if cfg.method == "smoothquant+" or cfg.clip:
            grid = GRID if cfg.method == "smoothquant+" else ()
            report, clips = smooth_model(model, cal, cfg.group_size, grid, objective=cfg.objective,
                                         scale_form=cfg.scale_form, clip=cfg.clip, block_inputs=block_inputs)
        manifest.update({
            "calibration": {"text": text.SOURCE + (" + " + text.EXTRA_SOURCE if cfg.calib_extra else ""), "split": "topics not held out (every 4th topic by name is held out)",
                            "tokenizer": os.path.abspath(cfg.tokenizer), "rows": int(rows.shape[0]),
                            "seq_len": cfg.seq_len, "tokens": cal.tokens, "samples_per_group": cfg.samples},
            "refinements": cfg.refinements(),
        })
        if cfg.method == "smoothquant+":
            manifest.update({
                "alpha_grid": list(GRID) + [None],
                "alpha_choice": (f"per linear group, lowest relative error of the {cfg.objective} output "
                                 f"({'every calibration token' if cfg.objective == 'layer' else f'{cfg.block_rows} calibration rows'}); "
                                 "None = no smoothing"),
                "folding": {"qkv": "input_layernorm.weight", "gate_up": "post_attention_layernorm.weight",
                            "down": "up_proj output rows", "o": "v_proj output rows (shared by the query heads of a KV head)"},
                "layers": report,
            })
        if cfg.clip:
            manifest["clip_grid"] = list(CLIP_GRID)
            manifest["clip_ratio_mean"] = {k: float(v.mean()) for k, v in clips.items()}
        log(f"calibrated{', smoothed' if cfg.method == 'smoothquant+' else ''}{', clip-searched' if cfg.clip else ''} "
            f"in {time.time() - t0:.0f} s")
    quantized, plain = {}, {}
    for i, L in enumerate(model.layers):
        if cfg.rounding == "gptq":  # one pass per input group, on the (smoothed) input's Gram matrix
            for grp in ("qkv", "o", "gate_up", "down"):
                projs = [p for p in PROJ if GROUP_OF[p] == grp]
                names = [f"model.layers.{i}.{p}" for p in projs]
                ws = [getattr(getattr(L, p.split(".")[0]), p.split(".")[1]).weight for p in projs]
                qs = quantize_gptq_group(ws, cal.gram[f"layers.{i}.{grp}"], cfg.group_size, [clips.get(n) for n in names],
                                         cfg.act_order)
                for n, q in zip(names, qs):
                    if cfg.dequantized:
                        plain[n + ".weight"] = q.dequantize()
                    else:
                        quantized[n] = q
        for proj in PROJ:
            parent, leaf = proj.split(".")
            name = f"model.layers.{i}.{proj}"
            w = getattr(getattr(L, parent), leaf).weight
            c = clips.get(name)
            if cfg.rounding == "gptq":
                continue  # done above
            if cfg.dequantized:
                plain[name + ".weight"] = fake_quantize(w, cfg.group_size, c)
            else:
                quantized[name] = quantize_rtn(w, cfg.group_size, c)
        # smoothed norms are kept in float32: the engine rounds them to its own dtype on load
        plain[f"model.layers.{i}.input_layernorm.weight"] = L.input_layernorm.detach().clone()
        plain[f"model.layers.{i}.post_attention_layernorm.weight"] = L.post_attention_layernorm.detach().clone()
    if cfg.recon_steps:
        if before_recon_out is not None:
            _write(cfg, config, weights, src, plain, quantized, dict(manifest, refinements=dict(
                manifest["refinements"], block_recon=None)), before_recon_out)
            log(f"wrote {before_recon_out} (before block reconstruction)")
        rc = ReconConfig(steps=cfg.recon_steps, lr=cfg.recon_lr, norms=cfg.recon_norms, seed=cfg.seed,
                         codes=cfg.recon_codes, codes_lr=cfg.recon_codes_lr, loss=cfg.recon_loss,
                         eval_rows=cfg.recon_eval_rows)
        n = min(cfg.recon_rows, rows.shape[0] - cfg.recon_val_rows)
        idx = torch.linspace(0, rows.shape[0] - 1, n).round().long()
        val = None
        if cfg.recon_val_rows:
            rest = torch.tensor(sorted(set(range(rows.shape[0])) - set(idx.tolist())))
            val = rest[torch.linspace(0, len(rest) - 1, min(cfg.recon_val_rows, len(rest))).round().long()]
        recon_report = reconstruct(model, quantized, rows[idx], rc, log=lambda s: log(f"{s} ({time.time() - t0:.0f} s)"),
                                   val_rows=None if val is None else rows[val])
        for i, L in enumerate(model.layers):  # tuned norms (the scales were replaced in `quantized`)
            plain[f"model.layers.{i}.input_layernorm.weight"] = L.input_layernorm.detach().clone()
            plain[f"model.layers.{i}.post_attention_layernorm.weight"] = L.post_attention_layernorm.detach().clone()
        manifest["block_recon"] = {"config": vars(rc), "rows": int(idx.numel()),
                                   "val_rows": 0 if val is None else int(val.numel()), "layers": recon_report}
        log(f"block reconstruction done in {time.time() - t0:.0f} s")
    _write(cfg, config, weights, src, plain, quantized, manifest, cfg.out)
    log(f"wrote {cfg.out} ({cfg.method}, group {cfg.group_size}) in {time.time() - t0:.0f} s")
    return manifest


def _write(cfg: QuantizeConfig, config: dict, weights: dict, src: dict, plain: dict, quantized: dict, manifest: dict,
           out: str) -> None:
    plain = dict(plain)
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        if name in src:
            plain[name] = weights[name].to(_dtype(src[name])) if name in weights else None
    plain = {k: v for k, v in plain.items() if v is not None}
    if cfg.dequantized:
        cfg_out = dict(config, torch_dtype="float32")
        save_hf_folder(out, plain, cfg_out)
        with open(os.path.join(out, DEQUANTIZED_MANIFEST), "w") as f:
            json.dump({"group_size": cfg.group_size, **manifest}, f, indent=2)
    else:
        checkpoint.write(out, config, plain, quantized, manifest)


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
    ap.add_argument("--clip", action="store_true", help="per-group clipping search (AWQ's)")
    ap.add_argument("--objective", default="layer", choices=OBJECTIVES, help="what the alpha search minimises")
    ap.add_argument("--scale-form", default="max", choices=SCALE_FORMS)
    ap.add_argument("--block-rows", type=int, default=4)
    ap.add_argument("--rounding", default="rtn", choices=ROUNDINGS, help="last step: round-to-nearest or GPTQ")
    ap.add_argument("--act-order", action="store_true", help="GPTQ in descending Hessian-diagonal order, static groups")
    ap.add_argument("--calib-extra", action="store_true", help="calibration text + the stdlib's docstrings")
    ap.add_argument("--recon-steps", type=int, default=0, help="block-wise scale/norm reconstruction steps per block")
    ap.add_argument("--recon-rows", type=int, default=64)
    ap.add_argument("--recon-lr", type=float, default=2e-3)
    ap.add_argument("--recon-no-norms", action="store_true", help="tune the group scales only")
    ap.add_argument("--recon-codes", action="store_true", help="the reconstruction also moves the 4-bit codes")
    ap.add_argument("--recon-codes-lr", type=float, default=2e-2, help="Adam lr on the code offsets (code units)")
    ap.add_argument("--recon-loss", default="row", choices=LOSSES, help="relative error per row or per token")
    ap.add_argument("--recon-val-rows", type=int, default=0, help="calibration rows held out, checked by the keep rule")
    ap.add_argument("--recon-eval-rows", type=int, default=0, help="training rows the keep rule measures (0: all)")
    a = ap.parse_args(argv)
    try:
        cfg = QuantizeConfig(a.model, a.out, a.method, a.tokenizer, a.group_size, a.calib_rows, a.seq_len, a.samples,
                             clip=a.clip, objective=a.objective, scale_form=a.scale_form, block_rows=a.block_rows, rounding=a.rounding,
                             act_order=a.act_order, calib_extra=a.calib_extra, recon_steps=a.recon_steps,
                             recon_rows=a.recon_rows, recon_lr=a.recon_lr, recon_norms=not a.recon_no_norms,
                             recon_codes=a.recon_codes, recon_codes_lr=a.recon_codes_lr, recon_loss=a.recon_loss,
                             recon_val_rows=a.recon_val_rows, recon_eval_rows=a.recon_eval_rows)
    except ValueError as e:
        ap.error(str(e))
    quantize(cfg)


if __name__ == "__main__":
    main()
