"""Accuracy of 4-bit weights on a real model: perplexity of SmolLM2-135M-Instruct (dequantized
from its GGUF) on held-out real text, in four configurations, through the engine on CPU:

    bf16          the HF folder (bf16 weights), quantization=None
    rtn           W4 g128 round-to-nearest checkpoint, quantization="w4a16"
    smoothquant+  W4 g128 SmoothQuant+ checkpoint, quantization="w4a16"
    smoothquant+ + fp8 kv   the same, kv_dtype="fp8" (e4m3 cache, per-head scales, read back by attention)

Activations are float32 (the engine's CPU dtype); the 4-bit layers run the torch
dequantize-then-matmul reference of the W4A16 kernel. Text: quant/text.py (Python's
documentation topics; every 4th topic held out, calibration uses the others).

    python bench/quant_accuracy.py [--rows 8] [--seq-len 512] [--out bench/results/quant]
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
from edgeserve_pod.quant.perplexity import make_runner, perplexity  # noqa: E402
from edgeserve_pod.quant.quantize import QuantizeConfig, quantize  # noqa: E402

GGUF = os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf")
HF = os.path.join(ROOT, "models", "smollm2-135m-instruct-hf")


from bench_common import cpu_name  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--calib-rows", type=int, default=16)
    ap.add_argument("--calib-seq-len", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "quant"))
    ap.add_argument("--work", default=None, help="folder for the two quantized checkpoints (default: a temp dir)")
    a = ap.parse_args()
    torch.manual_seed(0)
    if not os.path.isfile(os.path.join(HF, "model.safetensors")):
        from edgeserve_pod.tools.gguf_to_hf import convert

        convert(GGUF, HF)
    work = a.work or tempfile.mkdtemp(prefix="quant-acc-")
    tok = BPETokenizer.from_gguf(GGUF)
    _, held = text.split()
    rows = text.rows(tok.encode(held), a.seq_len, a.rows)
    print(f"held-out: {rows.shape[0]} rows x {rows.shape[1]} tokens", flush=True)

    ckpt = {}
    for method in ("rtn", "smoothquant+"):
        t = time.time()
        out = os.path.join(work, method.replace("+", "p"))
        man = quantize(QuantizeConfig(HF, out, method, GGUF, 128, a.calib_rows, a.calib_seq_len), log=lambda s: print(" ", s, flush=True))
        ckpt[method] = (out, man, time.time() - t)

    runs = [("bf16 weights", HF, None, "auto"), ("rtn w4 g128", ckpt["rtn"][0], "w4a16", "auto"),
            ("smoothquant+ w4 g128", ckpt["smoothquant+"][0], "w4a16", "auto"),
            ("smoothquant+ w4 g128 + fp8 kv", ckpt["smoothquant+"][0], "w4a16", "fp8")]
    ppl = {}
    for name, folder, q, kv in runs:
        t = time.time()
        ppl[name] = perplexity(make_runner(folder, q, kv, a.seq_len), rows)
        print(f"{name:32s} ppl {ppl[name]:8.4f}  ({time.time() - t:.0f} s)", flush=True)

    base = ppl["bf16 weights"]
    alphas = [v["alpha"] for v in ckpt["smoothquant+"][1]["layers"].values()]
    metrics = []
    for name, _, _, _ in runs:
        m = {"name": f"perplexity[smollm2-135m-instruct,{name},heldout={rows.numel()}tok,seq={a.seq_len}]",
             "value": ppl[name], "unit": "ppl", "better": "lower",
             "peer": {"name": "bf16 weights, same engine, same rows", "value": base},
             "limit": {"value": base, "how": "the unquantized model's perplexity (quantization is not expected to improve it)"}}
        if name.startswith("smoothquant+"):
            m["target"] = {"value": base * 1.03, "source": "issue 7: SmoothQuant+ within +3% of bf16, and below RTN"}
            m["extra"] = {"rtn_ppl": ppl["rtn w4 g128"], "vs_bf16": ppl[name] / base - 1}
        metrics.append(m)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    doc = {"topic": "quant", "device": cpu_name(), "commit": commit,
           "command": "python bench/quant_accuracy.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "setup": {"model": "SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF to bf16 (tools/gguf_to_hf.py)",
                     "text": text.SOURCE + "; held-out = every 4th topic by name", "activations": "float32 (CPU)",
                     "kv_fp8": "engine kv_dtype='fp8' (e4m3, per-head scales from the engine's start-up calibration)",
                     "calibration_rows": a.calib_rows, "calibration_seq_len": a.calib_seq_len,
                     "alpha_chosen_counts": {str(x): alphas.count(x) for x in sorted(set(alphas), key=lambda v: (v is None, v or 0))},
                     "quantize_seconds": {k: round(v[2], 1) for k, v in ckpt.items()}},
           "metrics": metrics}
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{time.strftime('%Y-%m-%d')}-cpu-accuracy.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
