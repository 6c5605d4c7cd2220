"""Per-kernel GPU time of one batch-1 decode step of the pod engine (diagnostic, prints only).

Run after bench/pod_engine.py on the same machine (it reuses the random 1B checkpoint that
bench wrote under /tmp, or writes it). Profiles (a) the smallest decode CUDA graph's replay and
(b) eager decode steps, with torch.profiler, and prints the top kernels by GPU time per step.

    python3 bench/pod_decode_profile.py
"""

from __future__ import annotations

import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu-backend"))

from edgeserve_pod.config import EngineConfig  # noqa: E402
from edgeserve_pod.engine.engine import LLMEngine  # noqa: E402
from edgeserve_pod.engine.sequence import SamplingParams  # noqa: E402
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint  # noqa: E402


def top(prof, steps: int, label: str, k: int = 14) -> None:
    tot = collections.Counter()
    cnt = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            tot[e.name[:90]] += e.device_time
            cnt[e.name[:90]] += 1
    s = sum(tot.values()) / steps
    print(f"PROFILE {label}: {s:.0f} us of kernels per step, {sum(cnt.values()) / steps:.0f} kernels per step")
    for name, t in tot.most_common(k):
        print(f"PROFILE   {t / steps:8.1f} us  x{cnt[name] / steps:5.1f}  {name}")


def main() -> None:
    path = "/tmp/llama-3.2-1b"
    if not os.path.exists(os.path.join(path, "config.json")):
        path = write_random_checkpoint("llama-3.2-1b", path, seed=0, device="cuda")
    prompt = list(range(100, 132))
    for eager in (False, True):
        eng = LLMEngine(EngineConfig(model=path, device="cuda", max_num_batched_tokens=8192, max_num_seqs=64,
                                     max_model_len=8192, gpu_memory_utilization=0.45, attention_backend="triton",
                                     enforce_eager=eager, kv_cache_blocks=256 if eager else None))
        eng.add_request("w", prompt, SamplingParams(max_tokens=8, ignore_eos=True))
        while eng.has_unfinished():
            eng.step()
        if not eager:
            g = eng.runner.graphs
            key = min(g.graphs)
            graph = g.graphs[key]
            n = 20
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(n):
                    graph.replay()
                torch.cuda.synchronize()
            top(prof, n, f"graph replay {key}")
        else:
            n = 20
            eng.add_request("p", prompt, SamplingParams(max_tokens=n + 1, ignore_eos=True))
            eng.step()  # prefill
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                while eng.has_unfinished():
                    eng.step()
                torch.cuda.synchronize()
            top(prof, n, "eager decode steps")
        del eng
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
