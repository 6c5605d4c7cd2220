"""Accuracy of 4-bit weights on a real model: perplexity of SmolLM2-135M-Instruct (dequantized
from its GGUF) on held-out real text, through the engine on CPU, for the 16-bit model, the RTN
baseline and SmoothQuant+ with each refinement measured on its own row:

    bf16                         the HF folder, quantization=None
    rtn w4 g128                  round-to-nearest, the plain baseline
    rtn w4 g128 + clip           RTN with the per-group clipping search alone (no smoothing)
    smoothquant+ w4 g128         alpha per linear group by the layer's output error
    ... + clip                   + per-group clipping search (AWQ's)
    ... + block objective        alpha chosen by the decoder block's output error
    ... + calib xN               N times the calibration text
    ... + fp8 kv                 the last SmoothQuant+ row with kv_dtype="fp8" (e4m3, per-head scales)
    extra: g64, g32              the last SmoothQuant+ config at smaller groups (not loadable by the
                                 W4A16 kernel: written dequantized and run unquantized), for the curve

Activations are float32 (the engine's CPU dtype); the 4-bit layers run the torch
dequantize-then-matmul reference of the W4A16 kernel. Text: quant/text.py (Python's
documentation topics; every 4th topic held out, calibration uses the others).

The "bf16" weights are themselves Q4_1 (groups of 32, dequantized), so requantizing to groups of
128 has an error floor; setup.weight_error gives the relative weight-space error of plain RTN at
each group size on these weights.

    python bench/quant_accuracy.py [--rows 8] [--seq-len 512] [--calib-rows 8] [--only NAME,...] [--tag T] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "gpu-backend"))

from edgeserve_pod.quant import text  # noqa: E402
from edgeserve_pod.quant.bpe import BPETokenizer  # noqa: E402
from edgeserve_pod.quant.llama_torch import PROJ, load_hf  # noqa: E402
from edgeserve_pod.quant.perplexity import make_runner, perplexity  # noqa: E402
from edgeserve_pod.quant.quantize import QuantizeConfig, quantize  # noqa: E402
from edgeserve_pod.quant.rtn import fake_quantize  # noqa: E402

from bench_common import cpu_name  # noqa: E402

GGUF = os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf")
HF = os.path.join(ROOT, "models", "smollm2-135m-instruct-hf")

SQ = dict(method="smoothquant+")
BEST = dict(SQ, clip=True, objective="block")  # the SmoothQuant+ configuration the headline row reports
# (name, QuantizeConfig overrides, kv_dtype); calib_rows in the overrides multiplies --calib-rows
VARIANTS = [
    ("rtn w4 g128", dict(method="rtn"), "auto"),
    ("rtn w4 g128 + clip", dict(method="rtn", clip=True), "auto"),
    ("smoothquant+ w4 g128", SQ, "auto"),
    ("smoothquant+ w4 g128 + clip", dict(SQ, clip=True), "auto"),
    ("smoothquant+ w4 g128 + clip + block objective", BEST, "auto"),
    ("smoothquant+ w4 g128 + clip + block objective + calib x4", dict(BEST, calib_rows=4), "auto"),
    ("smoothquant+ w4 g128 + clip + block objective + calib x4 + fp8 kv", dict(BEST, calib_rows=4), "fp8"),
    ("extra: smoothquant+ w4 g64 + clip + block objective + calib x4", dict(BEST, calib_rows=4, group_size=64), "auto"),
    ("extra: smoothquant+ w4 g32 + clip + block objective + calib x4", dict(BEST, calib_rows=4, group_size=32), "auto"),
]
HEADLINE = "smoothquant+ w4 g128 + clip + block objective + calib x4"


def weight_error(group_sizes=(128, 64, 32)) -> dict:
    """Relative weight-space error sum ||Q(W) - W||^2 / sum ||W||^2 of plain RTN over all projections."""
    _, w = load_hf(HF)
    out = {}
    for g in group_sizes:
        num = den = 0.0
        for name, t in w.items():
            if name.endswith(".weight") and any(p in name for p in PROJ):
                num += float((fake_quantize(t, g) - t).pow(2).sum())
                den += float(t.pow(2).sum())
        out[f"rtn g{g}"] = num / den
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--calib-rows", type=int, default=8)
    ap.add_argument("--calib-seq-len", type=int, default=256)
    ap.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "quant"))
    ap.add_argument("--tag", default="", help="suffix of the results file name (results are never overwritten)")
    ap.add_argument("--work", default=None, help="folder for the quantized checkpoints (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared host)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    if not os.path.isfile(os.path.join(HF, "model.safetensors")):
        from edgeserve_pod.tools.gguf_to_hf import convert

        convert(GGUF, HF)
    work = a.work or tempfile.mkdtemp(prefix="quant-acc-")
    tok = BPETokenizer.from_gguf(GGUF)
    _, held = text.split()
    rows = text.rows(tok.encode(held), a.seq_len, a.rows)
    print(f"held-out: {rows.shape[0]} rows x {rows.shape[1]} tokens", flush=True)
    variants = VARIANTS
    if a.only:
        keep = a.only.split(",")
        variants = [v for v in VARIANTS if v[0] in keep]
        if len(variants) != len(keep):
            ap.error(f"--only: unknown variant among {keep}; known: {[v[0] for v in VARIANTS]}")

    werr = weight_error()
    print("weight-space error of plain RTN:", werr, flush=True)
    t = time.time()
    base = perplexity(make_runner(HF, None, "auto", a.seq_len), rows)
    print(f"{'bf16 weights':60s} ppl {base:8.4f}  ({time.time() - t:.0f} s)", flush=True)
    results = [("bf16 weights", base, {}, None)]
    made: dict[str, tuple[str, dict, float]] = {}  # checkpoint key -> (folder, manifest, seconds)
    for name, over, kv in variants:
        over = dict(over)
        g = over.pop("group_size", 128)
        over["calib_rows"] = over.get("calib_rows", 1) * a.calib_rows
        key = json.dumps([over, g], sort_keys=True)
        if key not in made:
            t = time.time()
            out = os.path.join(work, f"ckpt{len(made)}")
            cfg = QuantizeConfig(HF, out, tokenizer=GGUF, group_size=g, seq_len=a.calib_seq_len,
                                 dequantized=g % 128 != 0, **over)
            man = quantize(cfg, log=lambda s: print(" ", s, flush=True))
            made[key] = (out, man, time.time() - t, cfg)
        out, man, secs, cfg = made[key]
        t = time.time()
        v = perplexity(make_runner(out, None if cfg.dequantized else "w4a16", kv, a.seq_len), rows)
        print(f"{name:60s} ppl {v:8.4f}  ({time.time() - t:.0f} s)", flush=True)
        alphas = [e["alpha"] for e in man.get("layers", {}).values()]
        conf = {"method": cfg.method, "group_size": g, "kv_dtype": kv, "calibration_rows": cfg.calib_rows if cfg.calibrated else 0,
                "calibration_seq_len": cfg.seq_len if cfg.calibrated else 0, **cfg.refinements(),
                "weights_in_engine": "dequantized float32 (group size not loadable by the W4A16 kernel)" if cfg.dequantized
                else "W4A16 checkpoint", "quantize_seconds": round(secs, 1)}
        if cfg.objective == "block" and cfg.method == "smoothquant+":
            conf["block_rows"] = cfg.block_rows
        if alphas:
            conf["alpha_chosen_counts"] = {str(x): alphas.count(x) for x in sorted(set(alphas), key=lambda y: (y is None, y or 0))}
        if cfg.clip:
            conf["clip_ratio_mean"] = sum(man["clip_ratio_mean"].values()) / len(man["clip_ratio_mean"])
        results.append((name, v, conf, kv))

    rtn = next((v for n, v, _, _ in results if n == "rtn w4 g128"), None)
    metrics = []
    for name, v, conf, _ in results:
        m = {"name": f"perplexity[smollm2-135m-instruct,{name},heldout={rows.numel()}tok,seq={a.seq_len}]",
             "value": v, "unit": "ppl", "better": "lower",
             "peer": {"name": "bf16 weights, same engine, same rows", "value": base},
             "limit": {"value": base, "how": "the unquantized model's perplexity (quantization is not expected to improve it)"},
             "extra": {"vs_bf16": v / base - 1, "config": conf}}
        if rtn is not None:
            m["extra"]["rtn_ppl"] = rtn
        if name.startswith("smoothquant+"):
            m["target"] = {"value": base * 1.03, "source": "issue 7: SmoothQuant+ within +3% of bf16, and below RTN"}
        if name == HEADLINE:
            m["extra"]["headline"] = "the SmoothQuant+ configuration this repo recommends (best g128 row)"
        metrics.append(m)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    doc = {"topic": "quant", "device": cpu_name(), "commit": commit,
           "command": "python bench/quant_accuracy.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "setup": {"model": "SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF to bf16 (tools/gguf_to_hf.py)",
                     "text": text.SOURCE + "; held-out = every 4th topic by name", "activations": "float32 (CPU)",
                     "kv_fp8": "engine kv_dtype='fp8' (e4m3, per-head scales from the engine's start-up calibration)",
                     "torch_threads": a.threads, "heldout_tokens": rows.numel(), "heldout_rows": rows.shape[0], "seq_len": a.seq_len,
                     "weight_error": {"what": "relative weight-space error sum||Q(W)-W||^2/sum||W||^2 of plain RTN over "
                                      "the 210 projections; the source weights are Q4_1 (group 32) dequantized",
                                      **werr}},
           "metrics": metrics}
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{time.strftime('%Y-%m-%d')}-cpu-accuracy{'-' + a.tag if a.tag else ''}.json")
    if os.path.exists(path):
        raise SystemExit(f"{path} exists: results are never overwritten (pass --tag)")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
