"""Tensor parallel over NCCL on 2 GPUs (issue 3): same greedy tokens as one GPU, and decode speed.

    python bench/tp_nccl.py --out DIR --commit SHA        # needs 2 CUDA devices (kind nvidia-h200-x2)

- identity: random Llama-3.2-1B shape in float32 (torch attention), TP=1 vs TP=2, greedy 32 tokens
  on 8 prompts. Float32 keeps the all-reduce's different summation order far below the logit gaps,
  so any divergence is a real sharding bug, not rounding.
- speed: random Llama-3.1-8B shape in bf16 (Triton attention, CUDA graphs), decode tok/s at batch 1,
  TP=2 vs TP=1 (the peer) in the same run; limit = per-GPU weight bytes / measured copy bandwidth.
Results: one JSON in BENCH.md's format (topic pod-engine), written after every section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))

from edgeserve_pod.config import EngineConfig  # noqa: E402
from edgeserve_pod.engine.engine import LLMEngine  # noqa: E402
from edgeserve_pod.engine.sequence import SamplingParams  # noqa: E402
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import copy_bandwidth  # noqa: E402
from pod_engine import Report, make_prompts, run, weight_read_bytes  # noqa: E402


def make(model, tp, **kw):
    # A fixed KV size (not sized from free memory) and graphs for batch 1 only keep start-up short.
    args = dict(model=model, device="cuda", tensor_parallel_size=tp, max_num_batched_tokens=4096,
                max_num_seqs=16, max_model_len=4096, kv_cache_blocks=2048, cuda_graph_max_batch=1)
    args.update(kw)
    return LLMEngine(EngineConfig(**args))


def identity(R, tmp):
    path = write_random_checkpoint("llama-3.2-1b", os.path.join(tmp, "l1b-fp32"), seed=0, dtype=torch.float32)
    prompts = {f"p{i}": p for i, p in enumerate(make_prompts(8, 128256, 16, 300, seed=7))}
    outs = []
    for tp in (1, 2):
        eng = make(path, tp, dtype="float32", attention_backend="torch", enforce_eager=True)
        try:
            out, _, _ = run(eng, prompts, SamplingParams(max_tokens=32, ignore_eos=True))
            outs.append(out)
        finally:
            eng.shutdown()
    same = sum(outs[0][k] == outs[1][k] for k in prompts)
    R.check("tp2_nccl_greedy_identical[llama-3.2-1b-random,float32,32 tokens]", same == len(prompts),
            identical=same, of=len(prompts))


def speed(R, tmp, bw):
    path = write_random_checkpoint("llama-3.1-8b", os.path.join(tmp, "l8b"), seed=0, dtype=torch.bfloat16)
    wbytes, _ = weight_read_bytes(path)
    prompt = make_prompts(1, 128256, 32, 32, seed=1)[0]
    n = 256
    rates = {}
    for tp in (1, 2):
        eng = make(path, tp, attention_backend="triton")
        try:
            run(eng, {"warm": prompt}, SamplingParams(max_tokens=32, ignore_eos=True))
            rs = []
            for k in range(3):
                _, ttft, wall = run(eng, {f"d{k}": prompt}, SamplingParams(max_tokens=n, ignore_eos=True))
                rs.append((n - 1) / (wall - ttft[f"d{k}"]))
            rates[tp] = statistics.median(rs)
        finally:
            eng.shutdown()
        torch.cuda.empty_cache()
    R.metric("decode_tok_s[llama-3.1-8b-random,batch=1,prompt=32,out=256,tp=2,nccl,cuda_graph]", rates[2], "tok/s",
             "higher", peer=("same engine, tp=1", rates[1]),
             limit=(bw / (wbytes / 2), f"{wbytes / 2e9:.2f} GB weights per GPU per step / {bw / 1e12:.2f} TB/s copy"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--commit", default="unknown")
    a = ap.parse_args()
    if torch.cuda.device_count() < 2:
        sys.exit(f"needs 2 CUDA devices, found {torch.cuda.device_count()}")
    name = torch.cuda.get_device_name(0)
    slug = name.lower().replace(" ", "-")
    R = Report(os.path.join(a.out, f"{time.strftime('%Y-%m-%d')}-{slug}-x2-tp.json"), f"2x {name}", a.commit,
               "python bench/tp_nccl.py --out DIR --commit SHA")
    tmp = "/tmp/tp_nccl"
    os.makedirs(tmp, exist_ok=True)
    bw = copy_bandwidth()
    for what, fn, args in (("identity", identity, (R, tmp)), ("speed", speed, (R, tmp, bw))):
        try:
            fn(*args)
        except Exception as e:  # keep the other section's result
            R.note(f"{what} failed: {type(e).__name__}: {e}")
            print("FAILED", what, repr(e), flush=True)
    print(json.dumps(R.doc, indent=1))


if __name__ == "__main__":
    main()
