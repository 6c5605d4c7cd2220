"""Streaming-head calibration: which kv heads can run as sink + window heads (DuoAttention).

Runs the real model densely over real text (quant/text.py: Python's documentation topics)
with a recording attention backend. For every layer and kv head it measures, over all query
rows that the window does not already cover (position >= sink + window):
    outside_mass  = mean attention probability on keys outside sink + window
    output_error  = mean ||o_full - o_stream|| / ||o_full||, o_stream = attention restricted
                    to sink + window (renormalised)
The heads with the smallest outside_mass, up to `target_ratio` of all kv heads, are marked
streaming; a GQA group shares one kv head, so its query heads' figures are averaged.

How this approximates DuoAttention's gate optimisation: DuoAttention learns one gate per kv
head, mixing full and streaming attention, by minimising the distortion of the final hidden
states on synthetic passkey text plus an L1 push towards streaming, then thresholds the gates.
We do not optimise: each head is scored independently by how much of its attention leaves
sink + window, which bounds that head's output change when made streaming
(||o_full - o_stream|| <= 2 * outside_mass * max_j ||v_j||), and the least-affected heads are
taken up to the target ratio. It ignores interactions between heads and layers (the gate
optimisation sees them through the final hidden states) and uses natural text instead of
passkey data; output_error is recorded beside it to show how well the bound tracks the real
change.

Usage:
    python -m edgeserve_pod.tools.calibrate_heads --model models/smollm2-135m-instruct-hf \
        --tokenizer models/smollm2-135m-instruct-q4_1.gguf --sink 64 --window 256 --ratio 0.5 \
        --seq-len 2048 --rows 2 --out head_map.json
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import torch

from ..layers.attention_base import AttentionBackend, AttentionMetadata


@dataclass
class CalibrationConfig:
    model: str  # HF-layout folder
    tokenizer: str  # GGUF file whose tokenizer encodes the text
    sink_tokens: int = 64
    window_tokens: int = 256
    target_ratio: float = 0.5  # fraction of kv heads to mark streaming
    seq_len: int = 2048
    rows: int = 2
    out: str = "head_map.json"
    passkey_samples: int = 0  # > 0: also probe retrieval (needle_mass) on that many synthetic passkey prompts

    def __post_init__(self) -> None:
        if not os.path.isfile(os.path.join(self.model, "config.json")):
            raise ValueError(f"model must be an HF-layout folder with config.json, got {self.model!r}")
        if not os.path.isfile(self.tokenizer):
            raise ValueError(f"tokenizer GGUF not found: {self.tokenizer!r}")
        if not 0.0 <= self.target_ratio <= 1.0:
            raise ValueError(f"target_ratio must be in [0, 1], got {self.target_ratio}")
        if self.sink_tokens < 0 or self.window_tokens < 1 or self.rows < 1:
            raise ValueError("need sink_tokens >= 0, window_tokens >= 1, rows >= 1")
        if self.passkey_samples < 0:
            raise ValueError(f"passkey_samples must be >= 0, got {self.passkey_samples}")
        if self.seq_len <= self.sink_tokens + self.window_tokens:
            raise ValueError(f"seq_len ({self.seq_len}) must exceed sink + window "
                             f"({self.sink_tokens + self.window_tokens}) or nothing is measured")


def head_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, sink: int, window: int):
    """One causal sequence. q (T, Hq, D), k/v (T, Hkv, D) -> (output (T, Hq, D) float32,
    outside_mass (Hkv,), output_error (Hkv,)), both averaged over rows i >= sink + window."""
    T, Hq, _ = q.shape
    g = Hq // k.shape[1]
    kf = k.float().repeat_interleave(g, 1)
    vf = v.float().repeat_interleave(g, 1)
    s = torch.einsum("qhd,khd->hqk", q.float(), kf) * scale  # (Hq, T, T)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    causal = j <= i
    inside = causal & ((j < sink) | (i - j < window))
    p = s.masked_fill(~causal, float("-inf")).softmax(-1)
    o_full = torch.einsum("hqk,khd->qhd", p, vf)
    rows = slice(sink + window, T)
    mass = (p * (~inside)).sum(-1)[:, rows].mean(-1)  # (Hq,)
    ps = s.masked_fill(~inside, float("-inf")).softmax(-1)
    o_str = torch.einsum("hqk,khd->qhd", ps, vf)
    err = ((o_full - o_str).norm(dim=-1) / o_full.norm(dim=-1).clamp_min(1e-6))[rows].mean(0)  # (Hq,)
    return o_full, mass.view(-1, g).mean(1), err.view(-1, g).mean(1)


def needle_mass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, rows: slice, needle: slice):
    """One causal sequence -> (output (T, Hq, D) float32, (Hkv,) mean attention probability that
    the query rows `rows` put on the key span `needle`)."""
    T, Hq, _ = q.shape
    g = Hq // k.shape[1]
    s = torch.einsum("qhd,khd->hqk", q.float(), k.float().repeat_interleave(g, 1)) * scale
    p = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    o = torch.einsum("hqk,khd->qhd", p, v.float().repeat_interleave(g, 1))
    return o, p[:, rows, needle].sum(-1).mean(-1).view(-1, g).mean(1)


class RecordingAttention(AttentionBackend):
    """Dense float32 attention for single-sequence prefills that records head_stats per layer,
    or, while `probe` = (rows, needle) is set, needle_mass."""

    name = "calibration"

    def __init__(self, num_heads, num_kv_heads, head_dim, scale=None, sink=64, window=256):
        super().__init__(num_heads, num_kv_heads, head_dim, scale)
        self.sink, self.window = sink, window
        self.mass: dict[int, list[torch.Tensor]] = {}
        self.err: dict[int, list[torch.Tensor]] = {}
        self.needle: dict[int, list[torch.Tensor]] = {}
        self.probe: tuple[slice, slice] | None = None

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        if meta.num_decode_tokens or (meta.cu_seqlens_q is not None and meta.cu_seqlens_q.numel() != 2):
            raise ValueError("calibration runs one prefill sequence per forward")
        if self.probe is not None:
            o, nm = needle_mass(q, k, v, self.scale, *self.probe)
            self.needle.setdefault(layer, []).append(nm)
            return o.to(q.dtype)
        o, mass, err = head_stats(q, k, v, self.scale, self.sink, self.window)
        self.mass.setdefault(layer, []).append(mass)
        self.err.setdefault(layer, []).append(err)
        return o.to(q.dtype)


def mark_streaming(mass: torch.Tensor, ratio: float) -> list[list[bool]]:
    """mass (layers, Hkv) -> streaming[layer][kv_head]: the round(ratio * n) smallest."""
    n = round(ratio * mass.numel())
    flat = torch.zeros(mass.numel(), dtype=torch.bool)
    flat[mass.flatten().argsort()[:n]] = True
    return flat.view(mass.shape).tolist()


@torch.inference_mode()
def calibrate(cfg: CalibrationConfig, log=print) -> dict:
    from ..layers.linear_bf16 import Bf16LinearFactory
    from ..models.arch import ModelArch
    from ..models.llama import LlamaModel
    from ..models.loader import load_weights
    from ..parallel import TPGroup
    from ..quant import text
    from ..quant.bpe import BPETokenizer

    arch = ModelArch.from_folder(cfg.model)
    rec = RecordingAttention(arch.num_heads, arch.num_kv_heads, arch.head_dim, sink=cfg.sink_tokens,
                             window=cfg.window_tokens)
    dev = torch.device("cpu")
    model = LlamaModel(arch, Bf16LinearFactory(torch.float32, dev), rec, TPGroup(), torch.float32, dev, cfg.seq_len)
    load_weights(model, cfg.model)
    model.eval()
    calib_text, _ = text.split()
    tok = BPETokenizer.from_gguf(cfg.tokenizer)
    calib_ids = tok.encode(calib_text)
    ids = text.rows(calib_ids, cfg.seq_len, cfg.rows)
    T = cfg.seq_len
    dummy = (torch.zeros(1), torch.zeros(1))
    for r in range(ids.shape[0]):
        meta = AttentionMetadata(T, 0, torch.arange(T), cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                                 cu_seqlens_k=torch.tensor([0, T], dtype=torch.int32), max_seqlen_q=T, max_seqlen_k=T)
        model(ids[r], torch.arange(T), [dummy] * arch.num_layers, [{}] * arch.num_layers, meta)
        log(f"row {r + 1}/{ids.shape[0]} done")
    mass = torch.stack([torch.stack(rec.mass[i]).mean(0) for i in range(arch.num_layers)])  # (layers, Hkv)
    err = torch.stack([torch.stack(rec.err[i]).mean(0) for i in range(arch.num_layers)])
    rank, pk = mass, None
    if cfg.passkey_samples:
        pk = passkey_probe(model, rec, tok, calib_ids, cfg.seq_len, cfg.passkey_samples, log)
        rank = torch.maximum(mass, pk)
    streaming = mark_streaming(rank, cfg.target_ratio)
    s = torch.tensor(streaming)
    result = {
        "model": os.path.basename(os.path.normpath(cfg.model)),
        "method": ("outside sink+window attention mass" + (" and passkey needle mass (the larger)" if pk is not None else "")
                   + ", smallest first, up to target_ratio (see calibrate_heads.py)"),
        "text": text.SOURCE, "seq_len": T, "rows": int(ids.shape[0]),
        "sink_tokens": cfg.sink_tokens, "window_tokens": cfg.window_tokens, "target_ratio": cfg.target_ratio,
        "streaming": streaming,
        "outside_mass": [[round(x, 5) for x in row] for row in mass.tolist()],
        "output_error": [[round(x, 5) for x in row] for row in err.tolist()],
        **({"passkey_samples": cfg.passkey_samples,
            "passkey_mass": [[round(x, 5) for x in row] for row in pk.tolist()]} if pk is not None else {}),
        "summary": {"streaming_heads": int(s.sum()), "kv_heads": s.numel(),
                    "mean_output_error_streaming": round(float(err[s].mean()), 4) if s.any() else None,
                    "mean_output_error_retrieval": round(float(err[~s].mean()), 4) if (~s).any() else None,
                    "rank_corr_mass_vs_error": round(_spearman(mass.flatten(), err.flatten()), 3)},
    }
    with open(cfg.out, "w") as f:
        json.dump(result, f, indent=1)
    log(json.dumps(result["summary"]))
    return result


PROBE_NEEDLE = " The secret code is {code}. Remember the secret code: {code}. "
PROBE_ASK = " What is the secret code? The secret code is"


def passkey_sample(tok, hay_ids: list[int], seq_len: int, depth: float, code: int):
    """A retrieval prompt unlike bench/passkey.py's (documentation text as the haystack, another
    needle wording, six digits): ids (T,), the answer rows and the needle's key span."""
    needle = tok.encode(PROBE_NEEDLE.format(code=code))
    ask = tok.encode(PROBE_ASK)
    answer = tok.encode(f" {code}")
    room = seq_len - len(needle) - len(ask) - len(answer)
    at = int(depth * room)
    ids = hay_ids[:at] + needle + hay_ids[at:room] + ask + answer
    n_prompt = len(ids) - len(answer)
    return torch.tensor(ids), slice(n_prompt - 1, len(ids) - 1), slice(at, at + len(needle))


@torch.inference_mode()
def passkey_probe(model, rec: RecordingAttention, tok, hay_ids: list[int], seq_len: int, n: int, log=print):
    """(layers, Hkv) mean needle_mass over n synthetic passkey prompts at depths spread over the
    context (teacher-forced: the rows that predict the answer digits look at the needle)."""
    import random

    rng = random.Random(1234)
    start = len(hay_ids) // 2  # the haystack is cut from the other half of the text than the rows above
    rec.needle.clear()
    try:
        for i in range(n):
            ids, rows, needle = passkey_sample(tok, hay_ids[start + i * 97:], seq_len, (i + 0.5) / n,
                                               rng.randrange(100000, 999999))
            T = ids.numel()
            rec.probe = (rows, needle)
            meta = AttentionMetadata(T, 0, torch.arange(T), cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                                     cu_seqlens_k=torch.tensor([0, T], dtype=torch.int32), max_seqlen_q=T, max_seqlen_k=T)
            layers = len(model.layers)
            model(ids, torch.arange(T), [(torch.zeros(1), torch.zeros(1))] * layers, [{}] * layers, meta)
            log(f"passkey probe {i + 1}/{n} done")
    finally:
        rec.probe = None
    return torch.stack([torch.stack(rec.needle[i]).mean(0) for i in sorted(rec.needle)])


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--sink", type=int, default=64)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--passkey-samples", type=int, default=0)
    ap.add_argument("--out", default="head_map.json")
    a = ap.parse_args(argv)
    calibrate(CalibrationConfig(a.model, a.tokenizer, a.sink, a.window, a.ratio, a.seq_len, a.rows, a.out,
                                a.passkey_samples))


if __name__ == "__main__":
    main()
