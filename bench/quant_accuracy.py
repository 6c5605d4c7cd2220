"""Accuracy of 4-bit weights on a real model: perplexity of SmolLM2-135M-Instruct (dequantized
from its GGUF) on held-out real text, through the engine on CPU, for the 16-bit model, the RTN
baseline and SmoothQuant+ with each refinement measured on its own row:

    bf16                         the HF folder, quantization=None
    rtn w4 g128                  round-to-nearest, the plain baseline
    rtn w4 g128 + clip           RTN with the per-group clipping search alone (no smoothing)
    smoothquant+ w4 g128         alpha per linear group by the layer's output error
    ... + clip                   + per-group clipping search (AWQ's)
    ... + block objective        alpha chosen by the decoder block's output error
    ... + calib x4               4 times the calibration text
    ... + gptq rounding          GPTQ's error-compensated rounding instead of RTN as the last step
    ... + act order              GPTQ in descending Hessian-diagonal order, groups fixed up front
                                 (static groups: same checkpoint format), on the best config
    ... + calib x16              16 times the calibration text (at --calib-rows 8: 128 rows of 256,
                                 32K of the 83K calibration tokens), with and without act order
    ... + calib x32              (256 rows of 256, 64K tokens), with and without act order
    ... + calib x40              (320 rows of 256, 82K tokens: nearly all of it), with act order,
                                 with and without the clipping search (chosen for RTN, before GPTQ)
    ... + calib x80 (+docstrings) 640 rows: the 325 rows of topics, then the standard library's
                                 docstrings (text.calibration_text; held-out topics untouched)
    ... + block recon            then block-wise reconstruction of the group scales and norms
                                 (blockwise.py); the same job also measures its checkpoint before
                                 the reconstruction (the row without "+ block recon", same
                                 calibration and rounding)
    ... + block recon + codes    a second reconstruction stage per block also moves the 4-bit codes
                                 (straight-through rounding on the fixed grid; blockwise.py), kept
                                 only if 16 held-aside calibration rows' objective drops too;
                                 "+ token loss": the relative error per token, not per row (from
                                 block 11 on, SmolLM2's first token of a row holds 99% of the row's
                                 squared norm, so the per-row error measures that token alone);
                                 "+ 256 rows": trained on 256 calibration rows instead of 64 (the
                                 keep rule measuring 64 of them)
    gptq w4 g128                 GPTQ alone (no smoothing), for reference
then, on the best SmoothQuant+ g128 row of the run (the headline):
    ... + fp8 kv                 kv_dtype="fp8" (e4m3, per-head scales)
    extra: g64, g32              the same config at smaller groups (not loadable by the W4A16 kernel:
                                 written dequantized and run unquantized), for the curve

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
import multiprocessing
import os
import shlex
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
from edgeserve_pod.quant.perplexity import make_runner, perplexity, ratio_interval  # noqa: E402
from edgeserve_pod.quant.quantize import QuantizeConfig, quantize  # noqa: E402
from edgeserve_pod.quant.rtn import fake_quantize  # noqa: E402

from bench_common import cpu_name  # noqa: E402

GGUF = os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf")
HF = os.path.join(ROOT, "models", "smollm2-135m-instruct-hf")

SQ = dict(method="smoothquant+")
RECON_STEPS = 80
CLIP = dict(SQ, clip=True)
# the reconstruction's second stage moves the codes; 16 calibration rows held out of it decide,
# with the training rows, whether a stage is kept (blockwise.py)
CODES = dict(recon_codes=True, recon_codes_lr=2e-2, recon_val_rows=16)
# (name, QuantizeConfig overrides); calib_rows in the overrides multiplies --calib-rows
VARIANTS = [
    ("rtn w4 g128", dict(method="rtn")),
    ("rtn w4 g128 + clip", dict(method="rtn", clip=True)),
    ("smoothquant+ w4 g128", SQ),
    ("smoothquant+ w4 g128 + clip", CLIP),
    ("smoothquant+ w4 g128 + clip + block objective", dict(CLIP, objective="block", block_rows=2)),
    ("smoothquant+ w4 g128 + clip + calib x4", dict(CLIP, calib_rows=4)),
    ("smoothquant+ w4 g128 + clip + gptq rounding", dict(CLIP, rounding="gptq")),
    ("smoothquant+ w4 g128 + clip + calib x4 + gptq rounding", dict(CLIP, calib_rows=4, rounding="gptq")),
    ("gptq w4 g128 (no smoothing or clip) + calib x4", dict(method="rtn", calib_rows=4, rounding="gptq")),
    ("smoothquant+ w4 g128 + clip + calib x4 + gptq rounding + act order",
     dict(CLIP, calib_rows=4, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + clip + calib x16 + gptq rounding", dict(CLIP, calib_rows=16, rounding="gptq")),
    ("smoothquant+ w4 g128 + clip + calib x16 + gptq rounding + act order",
     dict(CLIP, calib_rows=16, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + clip + calib x32 + gptq rounding + act order",
     dict(CLIP, calib_rows=32, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + clip + calib x32 + gptq rounding", dict(CLIP, calib_rows=32, rounding="gptq")),
    ("smoothquant+ w4 g128 + clip + calib x40 + gptq rounding + act order",
     dict(CLIP, calib_rows=40, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + calib x40 + gptq rounding + act order",
     dict(SQ, calib_rows=40, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + clip + calib x40 + gptq rounding + act order + block recon",
     dict(CLIP, calib_rows=40, rounding="gptq", act_order=True, recon_steps=RECON_STEPS)),
    ("smoothquant+ w4 g128 + clip + calib x40 + gptq rounding + act order + block recon + codes",
     dict(CLIP, calib_rows=40, rounding="gptq", act_order=True, recon_steps=RECON_STEPS, **CODES)),
    ("smoothquant+ w4 g128 + clip + calib x40 + gptq rounding + act order + block recon + codes + token loss",
     dict(CLIP, calib_rows=40, rounding="gptq", act_order=True, recon_steps=RECON_STEPS, **CODES, recon_loss="token")),
    ("smoothquant+ w4 g128 + clip + calib x40 + gptq rounding + act order + block recon + codes + token loss + 256 rows",
     dict(CLIP, calib_rows=40, rounding="gptq", act_order=True, recon_steps=RECON_STEPS, **CODES, recon_loss="token",
          recon_rows=256, recon_eval_rows=64)),
    ("smoothquant+ w4 g128 + clip + calib x80 (+docstrings) + gptq rounding + act order",
     dict(CLIP, calib_rows=80, calib_extra=True, rounding="gptq", act_order=True)),
    ("smoothquant+ w4 g128 + clip + calib x80 (+docstrings) + gptq rounding + act order + block recon",
     dict(CLIP, calib_rows=80, calib_extra=True, rounding="gptq", act_order=True, recon_steps=RECON_STEPS)),
]
RECON = " + block recon"


def before_recon(name: str) -> str:
    """The row measured on a block-recon job's checkpoint before the reconstruction."""
    return name.split(RECON)[0]
# then, on the best SmoothQuant+ row: FP8 KV, and groups of 64 and 32 (extra rows, for the curve)


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


def run_job(over_json: str, evals: list, out: str, calib_seq_len: int, seq_len: int, rows: torch.Tensor) -> list:
    """Quantize one checkpoint, then measure each (name, kv_dtype) on it
    -> [(name, ppl, config, kv, per-token NLL (R, T-1))].
    A name without RECON in a job with block reconstruction is measured on the checkpoint as it
    was before the reconstruction."""
    over = json.loads(over_json)
    g = over.pop("group_size", 128)
    t = time.time()
    cfg = QuantizeConfig(HF, out, tokenizer=GGUF, group_size=g, seq_len=calib_seq_len, dequantized=g % 128 != 0, **over)
    pre = out + "-before-recon" if cfg.recon_steps else None
    man = quantize(cfg, log=lambda s: print(" ", s, flush=True), before_recon_out=pre)
    secs = time.time() - t
    alphas = [e["alpha"] for e in man.get("layers", {}).values()]
    res = []
    for name, kv in evals:
        t = time.time()
        before = pre is not None and RECON not in name
        nll = []
        v = perplexity(make_runner(pre if before else out, None if cfg.dequantized else "w4a16", kv, seq_len), rows, nll)
        print(f"{name:60s} ppl {v:8.4f}  ({time.time() - t:.0f} s)", flush=True)
        conf = {"method": cfg.method, "group_size": g, "kv_dtype": kv, "calibration_rows": cfg.calib_rows if cfg.calibrated else 0,
                "calibration_seq_len": cfg.seq_len if cfg.calibrated else 0, **cfg.refinements(),
                "weights_in_engine": "dequantized float32 (group size not loadable by the W4A16 kernel)" if cfg.dequantized
                else "W4A16 checkpoint", "quantize_seconds": round(secs, 1)}
        if before:
            conf["block_recon"] = None
            conf["measured_on"] = "the same job's checkpoint before block reconstruction (same calibration and rounding)"
        elif cfg.recon_steps:
            layers = man["block_recon"]["layers"].values()
            conf["block_objective_mean"] = {"before": sum(e["objective_before"] for e in layers) / len(layers),
                                            "after": sum(e["objective_after"] for e in layers) / len(layers)}
        if cfg.objective == "block" and cfg.method == "smoothquant+":
            conf["block_rows"] = cfg.block_rows
        if alphas:
            conf["alpha_chosen_counts"] = {str(x): alphas.count(x) for x in sorted(set(alphas), key=lambda y: (y is None, y or 0))}
        if cfg.clip:
            conf["clip_ratio_mean"] = sum(man["clip_ratio_mean"].values()) / len(man["clip_ratio_mean"])
        res.append((name, v, conf, kv, torch.stack(nll)))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--calib-rows", type=int, default=8)
    ap.add_argument("--calib-seq-len", type=int, default=256)
    ap.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--no-extras", action="store_true", help="skip FP8 KV and the g64/g32 rows of the best SmoothQuant+ row")
    ap.add_argument("--fp8-alongside", action="store_true",
                    help="measure every selected row with FP8 KV too, on the same checkpoint (one quantization per "
                         "config); use with --no-extras to get the FP8 KV row of one config without quantizing it twice")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "quant"))
    ap.add_argument("--tag", default="", help="suffix of the results file name (results are never overwritten)")
    ap.add_argument("--work", default=None, help="folder for the quantized checkpoints (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (1 is fastest on a shared host)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one quantized checkpoint each")
    ap.add_argument("--recon-steps", type=int, default=None, help=f"block recon steps per block (default {RECON_STEPS})")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    if not os.path.isfile(os.path.join(HF, "model.safetensors")):
        from edgeserve_pod.tools.gguf_to_hf import convert

        convert(GGUF, HF)
    work = a.work or tempfile.mkdtemp(prefix="quant-acc-")
    os.makedirs(work, exist_ok=True)
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
    base_nll = []
    base = perplexity(make_runner(HF, None, "auto", a.seq_len), rows, base_nll)
    base_nll = torch.stack(base_nll)  # (R, T-1)
    print(f"{'bf16 weights':60s} ppl {base:8.4f}  ({time.time() - t:.0f} s)", flush=True)
    def run_all(named: list) -> dict:
        """[(name, overrides, kv_dtype)] -> {name: (name, ppl, config, kv, nll)}; one job per checkpoint."""
        jobs: dict[str, list] = {}
        for name, over, kv in named:
            over = dict(over)
            over["calib_rows"] = over.get("calib_rows", 1) * a.calib_rows
            if over.get("recon_steps") and a.recon_steps is not None:
                over["recon_steps"] = a.recon_steps
            jobs.setdefault(json.dumps(over, sort_keys=True), []).append((name, kv))
            if RECON in name and kv == "auto" and not any(n == before_recon(name) for n, _, _ in named):
                # its checkpoint before the reconstruction, measured in the same job
                jobs[json.dumps(over, sort_keys=True)].append((before_recon(name), kv))
        args = [(over, evals, os.path.join(work, f"ckpt{len(os.listdir(work)) + i}"), a.calib_seq_len, a.seq_len, rows)
                for i, (over, evals) in enumerate(jobs.items())]
        if a.jobs > 1:  # independent checkpoints in worker processes, one torch thread each
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(a.jobs, len(args)), initializer=torch.set_num_threads, initargs=(a.threads,)) as pool:
                done = pool.starmap(run_job, args)
        else:
            done = [run_job(*x) for x in args]
        return {r[0]: r for rs in done for r in rs}

    named = [(n, o, "auto") for n, o in variants]
    if a.fp8_alongside:
        named += [(n + " + fp8 kv", o, "fp8") for n, o in variants]
    by_name = run_all(named)
    sq = [n for n, _ in variants if n.startswith("smoothquant+")]
    headline = min(sq, key=lambda n: by_name[n][1]) if sq else None
    later = []
    if headline is not None and not a.no_extras:
        over = dict(variants)[headline]
        later = [] if a.fp8_alongside else [(headline + " + fp8 kv", over, "fp8")]
        # the extra group sizes are written dequantized: without block recon (it tunes the 4-bit scales)
        later += [("extra: " + before_recon(headline).replace("g128", f"g{g}"), dict(over, group_size=g, recon_steps=0),
                   "auto") for g in (64, 32)]
        by_name.update(run_all(later))
    selected = [n for n, _ in variants]
    # rows measured on a block-recon job's checkpoint before the reconstruction, not selected themselves
    pre = list(dict.fromkeys(before_recon(n) for n in selected if RECON in n and before_recon(n) not in selected))
    results = ([("bf16 weights", base, {}, None, base_nll)] + [by_name[n] for n in pre] + [by_name[n] for n, _ in variants]
               + [by_name[n + " + fp8 kv"] for n, _ in variants if a.fp8_alongside] + [by_name[n] for n, _, _ in later])

    rtn = next((v for n, v, _, _, _ in results if n == "rtn w4 g128"), None)
    metrics = []
    nll_of = {name: nll for name, _, _, _, nll in results}
    for name, v, conf, _, nll in results:
        m = {"name": f"perplexity[smollm2-135m-instruct,{name},heldout={rows.numel()}tok,seq={a.seq_len}]",
             "value": v, "unit": "ppl", "better": "lower",
             "peer": {"name": "bf16 weights, same engine, same rows", "value": base},
             "limit": {"value": base, "how": "the unquantized model's perplexity (quantization is not expected to improve it)"},
             "extra": {"vs_bf16": v / base - 1, "config": conf}}
        if name != "bf16 weights":  # paired bootstrap over 64-token chunks of the same held-out tokens
            lo, hi = ratio_interval(nll, base_nll)
            m["extra"]["vs_bf16_ci95"] = [lo - 1, hi - 1]
            if RECON in name and before_recon(name) in nll_of and " + fp8 kv" not in name:
                lo, hi = ratio_interval(nll, nll_of[before_recon(name)])
                m["extra"]["vs_before_recon_ci95"] = [lo - 1, hi - 1]
        if rtn is not None:
            m["extra"]["rtn_ppl"] = rtn
        if name.startswith("smoothquant+") and "g128" in name:
            m["target"] = {"value": base * 1.03, "source": "issue 7: SmoothQuant+ within +3% of bf16, and below RTN"}
        if name == headline:
            m["extra"]["headline"] = "the best SmoothQuant+ g128 row of this run (FP8 KV and the extra group sizes use its config)"
        metrics.append(m)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    doc = {"topic": "quant", "device": cpu_name(), "commit": commit,
           "command": "python bench/quant_accuracy.py " + shlex.join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "setup": {"model": "SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF to bf16 (tools/gguf_to_hf.py)",
                     "text": text.SOURCE + "; held-out = every 4th topic by name", "activations": "float32 (CPU)",
                     "kv_fp8": "engine kv_dtype='fp8' (e4m3, per-head scales from the engine's start-up calibration)",
                     "ci95": "paired block bootstrap of the perplexity ratio: the held-out tokens cut into 64-token "
                             "chunks, 2000 resamples (quant/perplexity.ratio_interval)",
                     "torch_threads": a.threads, "worker_processes": a.jobs, "heldout_tokens": rows.numel(), "heldout_rows": rows.shape[0], "seq_len": a.seq_len,
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
