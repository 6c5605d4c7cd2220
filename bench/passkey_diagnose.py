"""Two diagnostics for bench/passkey.py's misses (issue 6), float32 on CPU.

margins: per passkey trial, the answer's first-token margin (log-prob of the answer token minus
    the best other token) and the answer's log-likelihood, teacher-forced in one prefill, dense
    and with a head map's streaming kv heads restricted to token-exact sink + window (one
    column per --windows entry). Not the engine: its own masked attention (calibrate_heads'
    streaming_output), so it also checks that a miss is not an artefact of the sparse backend.
interp: the engine's sparse backend, torch path vs the Triton kernels under TRITON_INTERPRET=1,
    on one small passkey prompt: max |logit difference| per step (prefill's last row, decodes).

    python bench/passkey_diagnose.py margins --head-map MAP --windows 256,512,1024 --trials 2048:0.1:65125
    python bench/passkey_diagnose.py interp --length 384 --budget 96    # Quest on (budget < context)
    python bench/passkey_diagnose.py interp --length 384 --budget 4096  # Quest off: streaming heads only
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "gpu-backend"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "smollm2-135m-instruct-hf")
TOKENIZER = os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf")
HEAD_MAP = os.path.join(ROOT, "gpu-backend", "edgeserve_pod", "tools", "head_maps", "smollm2-135m-instruct.json")


def margins(a) -> None:
    import torch

    from edgeserve_pod.layers.attention_base import AttentionMetadata
    from edgeserve_pod.quant.bpe import BPETokenizer
    from edgeserve_pod.tools import calibrate_heads as ch
    from passkey import build_prompt

    trials = [(int(L), float(d), int(k)) for L, d, k in (t.split(":") for t in a.trials.split(","))]
    with open(a.head_map) as f:
        stream_all = torch.tensor(json.load(f)["streaming"])

    class Masked(ch.RecordingAttention):  # window 0: dense; else the map's streaming heads on sink + window
        def forward(self, layer, q, k, v, *_):
            st = stream_all[layer] if self.window else torch.zeros(k.shape[1], dtype=torch.bool)
            return ch.streaming_output(q, k, v, self.scale, self.sink, self.window or 1, st).to(q.dtype)

    model, rec = ch.load_model(MODEL, a.sink, 0, max(t[0] for t in trials) + 16, backend=Masked)
    tok = BPETokenizer.from_gguf(TOKENIZER)
    layers = len(model.layers)
    for L, depth, key in trials:
        prompt, ans = build_prompt(tok, L, depth, key)
        ids = torch.tensor(prompt + ans)
        n, T = len(prompt), ids.numel()
        rows, answer = slice(n - 1, T - 1), torch.tensor(ans)
        meta = AttentionMetadata(T, 0, torch.arange(T), cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                                 cu_seqlens_k=torch.tensor([0, T], dtype=torch.int32), max_seqlen_q=T, max_seqlen_k=T)
        cols = []
        for w in [0] + [int(x) for x in a.windows.split(",")]:
            rec.window = w
            with torch.inference_mode():
                h = model(ids, torch.arange(T), [(torch.zeros(1), torch.zeros(1))] * layers, [{}] * layers, meta)
                lp = model.compute_logits(h[rows]).log_softmax(-1)
            tgt = lp[torch.arange(len(ans)), answer]
            other = lp.clone()
            other[torch.arange(len(ans)), answer] = float("-inf")
            m0 = float(tgt[0] - other[0].max())
            cols.append(f"{'dense' if w == 0 else f'window {w}'}: margin0 {m0:+.2f} answer loglik {float(tgt.sum()):.2f}")
        print(f"L={L} depth={depth} key={key} | " + " | ".join(cols), flush=True)


def interp(a) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from edgeserve_pod.config import EngineConfig
    from edgeserve_pod.engine.engine import LLMEngine
    from edgeserve_pod.engine.sequence import SamplingParams
    from edgeserve_pod.quant.bpe import BPETokenizer
    from passkey import build_prompt

    with open(a.head_map) as f:
        m = dict(json.load(f), sink_tokens=a.sink, window_tokens=a.window, token_budget=a.budget)
    path = os.path.join(a.out, f"head-map-interp-{a.budget}.json")
    os.makedirs(a.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(m, f)
    tok = BPETokenizer.from_gguf(TOKENIZER)
    prompt, _ = build_prompt(tok, a.length, 0.3, 12345)
    res = {}
    for impl in ("torch", "triton"):
        n = a.length + 64
        eng = LLMEngine(EngineConfig(model=MODEL, device="cpu", block_size=16, max_model_len=n, max_num_batched_tokens=n,
                                     max_num_seqs=1, kv_cache_blocks=2 * (n // 16) + 4, enforce_eager=True,
                                     attention_backend="sparse", sparse_head_map=path))
        eng.runner.attn.impl = impl  # the backend's own switch: same selection, kernels or torch masks
        rows, orig = [], eng.runner.model.compute_logits

        def keep(h, orig=orig, rows=rows):
            out = orig(h)
            rows.append(out[-1:].clone())
            return out

        eng.runner.model.compute_logits = keep
        eng.add_request("r", prompt, SamplingParams(max_tokens=4))
        toks = []
        while eng.has_unfinished():
            for o in eng.step():
                toks += o.new_token_ids
        res[impl] = (toks, torch.cat(rows))
        print(impl, "tokens", toks, flush=True)
    x, y = res["torch"][1], res["triton"][1]
    print(f"L={a.length} sink {a.sink} window {a.window} Quest budget {a.budget}: max |logit torch - triton| per step "
          f"{[round(v, 6) for v in (x - y).abs().amax(-1).tolist()]} (logit scale {float(x.abs().max()):.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("margins", "interp"))
    ap.add_argument("--head-map", default=HEAD_MAP)
    ap.add_argument("--sink", type=int, default=64)
    ap.add_argument("--windows", default="256", help="margins: streaming windows to try")
    ap.add_argument("--trials", default="2048:0.1:65125,2048:0.1:15306,2048:0.7:76150,2048:0.7:28254,2048:0.3:77013",
                    help="margins: L:depth:key,... (bench/passkey.py's trials)")
    ap.add_argument("--length", type=int, default=384, help="interp: prompt length")
    ap.add_argument("--window", type=int, default=64, help="interp: streaming window")
    ap.add_argument("--budget", type=int, default=96, help="interp: Quest token budget")
    ap.add_argument("--out", default="/tmp/passkey-diagnose")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if a.what == "interp":
        a.sink = 16 if a.sink == 64 else a.sink
    (margins if a.what == "margins" else interp)(a)


if __name__ == "__main__":
    main()
