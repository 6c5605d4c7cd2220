"""Streaming-head calibration: which kv heads can run as sink + window heads (DuoAttention).

Runs the real model densely, float32 on CPU, with a recording attention backend, and scores
every (layer, kv head); a GQA group shares one kv head, so its query heads' figures are
averaged. The heads with the smallest score, up to `target_ratio` of all kv heads, are marked
streaming. Scores (each map records the ones it computed; `method` names the one it ranks by):
    ablation_drop (--ablation-samples N; the rule of the committed SmolLM2 map): the mean,
                    over N synthetic passkey prompts (passkey_sample: documentation text as the
                    haystack, a "secret code" needle, six digits: not bench/passkey.py's
                    filler, wording or keys), of the drop of the answer's teacher-forced
                    log-likelihood (nats, summed over its tokens) when that kv head alone runs
                    as a streaming head (token-exact sink + window), all others dense; the
                    needles lie outside the window. Exact: each ablation reruns the model from
                    that layer's cached input (about 15 layer passes per head on average;
                    3 prompts of 1024 tokens took 29 min on 2 shared CPU cores for SmolLM2).
    needle        (--passkey-samples N without ablation): max(outside_mass, passkey_mass),
                    passkey_mass = attention that the answer rows put on the needle.
    outside_mass  (neither): on natural text (quant/text.py: Python's documentation topics),
                    the mean attention probability on keys outside sink + window over query
                    rows >= sink + window. output_error (||o_full - o_stream|| / ||o_full||)
                    is recorded beside it.

How this approximates DuoAttention's gate optimisation: DuoAttention learns one gate per kv
head, output = a * full + (1 - a) * streaming, by gradient descent on the distortion of the
final hidden states at the answer of synthetic passkey prompts plus an L1 push of the gates
towards streaming, then thresholds the gates. ablation_drop measures the same kind of
objective (on passkey data unlike the eval's, at the answer; log-likelihood instead of
hidden-state distortion) one gate at a time, exactly, at a = 0; there is no joint
optimisation, so heads that back each other up (each harmless alone, harmful together) are not
seen, and the L1 push is replaced by taking the target ratio of smallest scores. outside_mass
only bounds a head's own output change (||o_full - o_stream|| <= 2 * outside_mass * max ||v||)
on natural text and ignores what the rest of the model does with it; on SmolLM2 it marked the
strongest needle-reading heads streaming (bench/results/sparse-attention/).

Usage (the committed SmolLM2 map, made with --reuse of the previous map, c3226ab: --reuse takes
outside_mass, output_error and passkey_mass from a map made with the same settings, so that only
the ablation runs):
    python -m edgeserve_pod.tools.calibrate_heads --model models/smollm2-135m-instruct-hf \
        --tokenizer models/smollm2-135m-instruct-q4_1.gguf --sink 64 --window 256 --ratio 0.5 \
        --seq-len 2048 --rows 2 --passkey-samples 6 --ablation-samples 3 --ablation-len 1024 \
        --out head_map.json
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
    ablation_samples: int = 0  # > 0: rank heads by ablation_probe on that many synthetic passkey prompts
    ablation_len: int = 0  # their length in tokens (0 = seq_len)
    reuse: str | None = None  # a head map made with the same settings: take its mass figures, run only the ablation

    def __post_init__(self) -> None:
        if not os.path.isfile(os.path.join(self.model, "config.json")):
            raise ValueError(f"model must be an HF-layout folder with config.json, got {self.model!r}")
        if not os.path.isfile(self.tokenizer):
            raise ValueError(f"tokenizer GGUF not found: {self.tokenizer!r}")
        if not 0.0 <= self.target_ratio <= 1.0:
            raise ValueError(f"target_ratio must be in [0, 1], got {self.target_ratio}")
        if self.sink_tokens < 0 or self.window_tokens < 1 or self.rows < 1:
            raise ValueError("need sink_tokens >= 0, window_tokens >= 1, rows >= 1")
        if self.passkey_samples < 0 or self.ablation_samples < 0:
            raise ValueError(f"passkey_samples and ablation_samples must be >= 0, got {self.passkey_samples}, "
                             f"{self.ablation_samples}")
        n_ab = self.ablation_len or self.seq_len
        if self.ablation_samples and not self.sink_tokens + self.window_tokens + 64 < n_ab <= self.seq_len:
            raise ValueError(f"ablation_len ({self.ablation_len}) must exceed sink + window + 64 and be <= seq_len")
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


def streaming_output(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, sink: int, window: int,
                     stream_kv: torch.Tensor) -> torch.Tensor:
    """One causal sequence, float32 (T, Hq, D): dense causal attention, except that the kv heads
    with stream_kv[h] = True (and their GQA query heads) see only sink + window (the first `sink`
    keys and the `window` most recent ones, token-exact)."""
    T, Hq, _ = q.shape
    g = Hq // k.shape[1]
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    causal = j <= i
    local = causal & ((j < sink) | (i - j < window))
    mask = torch.where(stream_kv.repeat_interleave(g)[:, None, None], local, causal)  # (Hq, T, T)
    qh = q.float().transpose(0, 1)
    kh = k.float().repeat_interleave(g, 1).transpose(0, 1)
    vh = v.float().repeat_interleave(g, 1).transpose(0, 1)
    o = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    return o.transpose(0, 1)


class RecordingAttention(AttentionBackend):
    """Dense float32 attention for single-sequence prefills that records head_stats per layer;
    while `probe` = (rows, needle) is set, needle_mass instead; while `ablate` = (layer, kv_head)
    is set, records nothing and runs that one kv head as a streaming head (streaming_output)."""

    name = "calibration"

    def __init__(self, num_heads, num_kv_heads, head_dim, scale=None, sink=64, window=256):
        super().__init__(num_heads, num_kv_heads, head_dim, scale)
        self.sink, self.window = sink, window
        self.mass: dict[int, list[torch.Tensor]] = {}
        self.err: dict[int, list[torch.Tensor]] = {}
        self.needle: dict[int, list[torch.Tensor]] = {}
        self.probe: tuple[slice, slice] | None = None
        self.ablate: tuple[int, int] | None = None

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        if meta.num_decode_tokens or (meta.cu_seqlens_q is not None and meta.cu_seqlens_q.numel() != 2):
            raise ValueError("calibration runs one prefill sequence per forward")
        if self.ablate is not None:
            stream = torch.zeros(k.shape[1], dtype=torch.bool)
            if layer == self.ablate[0]:
                stream[self.ablate[1]] = True
            return streaming_output(q, k, v, self.scale, self.sink, self.window, stream).to(q.dtype)
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
def _reusable(cfg: CalibrationConfig, rows: int) -> dict:
    with open(cfg.reuse) as f:
        old = json.load(f)
    want = {"model": os.path.basename(os.path.normpath(cfg.model)), "seq_len": cfg.seq_len, "rows": rows,
            "sink_tokens": cfg.sink_tokens, "window_tokens": cfg.window_tokens,
            "passkey_samples": cfg.passkey_samples or None}
    got = {k: old.get(k) for k in want}
    if got != want:
        raise ValueError(f"--reuse {cfg.reuse}: made with {got}, this run wants {want}")
    return old


def load_model(model_dir: str, sink: int, window: int, max_len: int, backend=None):
    """(float32 CPU model whose attention is a RecordingAttention, or a subclass `backend`, that
    backend) for an HF-layout folder."""
    from ..layers.linear_bf16 import Bf16LinearFactory
    from ..models.arch import ModelArch
    from ..models.llama import LlamaModel
    from ..models.loader import load_weights
    from ..parallel import TPGroup

    arch = ModelArch.from_folder(model_dir)
    rec = (backend or RecordingAttention)(arch.num_heads, arch.num_kv_heads, arch.head_dim, sink=sink, window=window)
    dev = torch.device("cpu")
    model = LlamaModel(arch, Bf16LinearFactory(torch.float32, dev), rec, TPGroup(), torch.float32, dev, max_len)
    load_weights(model, model_dir)
    return model.eval(), rec


def calibrate(cfg: CalibrationConfig, log=print) -> dict:
    from ..models.arch import ModelArch
    from ..quant import text
    from ..quant.bpe import BPETokenizer

    arch = ModelArch.from_folder(cfg.model)
    model, rec = load_model(cfg.model, cfg.sink_tokens, cfg.window_tokens, cfg.seq_len)
    calib_text, _ = text.split()
    tok = BPETokenizer.from_gguf(cfg.tokenizer)
    calib_ids = tok.encode(calib_text)
    ids = text.rows(calib_ids, cfg.seq_len, cfg.rows)
    T = cfg.seq_len
    old = _reusable(cfg, int(ids.shape[0])) if cfg.reuse else None
    if old is not None:  # the same deterministic float32 passes over the same text: take their figures
        log(f"outside_mass, output_error and passkey_mass from {cfg.reuse} (same model, text and settings)")
        mass, err = torch.tensor(old["outside_mass"]), torch.tensor(old["output_error"])
        pk = torch.tensor(old["passkey_mass"]) if cfg.passkey_samples else None
    else:
        dummy = (torch.zeros(1), torch.zeros(1))
        for r in range(ids.shape[0]):
            meta = AttentionMetadata(T, 0, torch.arange(T), cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                                     cu_seqlens_k=torch.tensor([0, T], dtype=torch.int32), max_seqlen_q=T, max_seqlen_k=T)
            model(ids[r], torch.arange(T), [dummy] * arch.num_layers, [{}] * arch.num_layers, meta)
            log(f"row {r + 1}/{ids.shape[0]} done")
        mass = torch.stack([torch.stack(rec.mass[i]).mean(0) for i in range(arch.num_layers)])  # (layers, Hkv)
        err = torch.stack([torch.stack(rec.err[i]).mean(0) for i in range(arch.num_layers)])
        pk = None
        if cfg.passkey_samples:
            pk = passkey_probe(model, rec, tok, calib_ids, cfg.seq_len, cfg.passkey_samples, log)
    rank, ab = mass if pk is None else torch.maximum(mass, pk), None
    if cfg.ablation_samples:
        ab = ablation_probe(model, rec, tok, calib_ids, cfg.ablation_len or cfg.seq_len, cfg.ablation_samples, log)
        rank = ab
    streaming = mark_streaming(rank, cfg.target_ratio)
    s = torch.tensor(streaming)
    result = {
        "model": os.path.basename(os.path.normpath(cfg.model)),
        "method": (("answer log-likelihood drop when the head alone is streaming (ablation_drop)" if ab is not None else
                    "outside sink+window attention mass" + (" and passkey needle mass (the larger)" if pk is not None else ""))
                   + ", smallest first, up to target_ratio (see calibrate_heads.py)"),
        "text": text.SOURCE, "seq_len": T, "rows": int(ids.shape[0]),
        "sink_tokens": cfg.sink_tokens, "window_tokens": cfg.window_tokens, "target_ratio": cfg.target_ratio,
        "streaming": streaming,
        "outside_mass": [[round(x, 5) for x in row] for row in mass.tolist()],
        "output_error": [[round(x, 5) for x in row] for row in err.tolist()],
        **({"passkey_samples": cfg.passkey_samples,
            "passkey_mass": [[round(x, 5) for x in row] for row in pk.tolist()]} if pk is not None else {}),
        **({"ablation_samples": cfg.ablation_samples, "ablation_len": cfg.ablation_len or T,
            "ablation_drop": [[round(x, 5) for x in row] for row in ab.tolist()]} if ab is not None else {}),
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


def _answer_logprob(model, x, residual, rows: slice, answer: torch.Tensor) -> float:
    h = model.norm.add_forward(x[rows], residual[rows])[0]
    return float(model.compute_logits(h).log_softmax(-1).gather(1, answer[:, None]).sum())


@torch.inference_mode()
def ablation_probe(model, rec: RecordingAttention, tok, hay_ids: list[int], seq_len: int, n: int, log=print):
    """(layers, Hkv) mean drop of the answer's log-likelihood (nats, teacher-forced, summed over
    the answer tokens) when that one kv head alone runs as a streaming head (sink + window), on n
    synthetic passkey prompts (passkey_sample: documentation haystack, "secret code" wording,
    six digits; the needle always lies outside sink + window of the answer rows). Layers before
    the ablated one are unchanged, so each ablation reruns the model from its layer's cached input."""
    import random

    rng = random.Random(4321)
    start = len(hay_ids) // 4  # other documentation text than the rows (start) and passkey_probe (middle on)
    layers = len(model.layers)
    kv = [(torch.zeros(1), torch.zeros(1))] * layers
    n_kv = rec.num_kv_heads
    drop = torch.zeros(layers, n_kv)
    far = max(0.0, 1.0 - (rec.sink + rec.window + 32) / seq_len)  # deepest depth with the needle outside the window
    for s in range(n):
        ids, rows, _ = passkey_sample(tok, hay_ids[start + s * 131:], seq_len, far * (s + 0.5) / n,
                                      rng.randrange(100000, 999999))
        T = ids.numel()
        answer = ids[rows.start + 1:rows.stop + 1]
        pos = torch.arange(T)
        meta = AttentionMetadata(T, 0, pos, cu_seqlens_q=torch.tensor([0, T], dtype=torch.int32),
                                 cu_seqlens_k=torch.tensor([0, T], dtype=torch.int32), max_seqlen_q=T, max_seqlen_k=T)
        rec.ablate = (-1, 0)  # dense, through the ablation path (records nothing)
        try:
            x, res = torch.nn.functional.embedding(ids, model.embed_tokens), None
            inputs = []
            for i, layer in enumerate(model.layers):
                inputs.append((x, res))
                x, res = layer(x, res, pos, model.rotary, kv[i], {}, meta)
            dense = _answer_logprob(model, x, res, rows, answer)
            for li in range(layers):
                for h in range(n_kv):
                    rec.ablate = (li, h)
                    x, res = inputs[li]
                    for i in range(li, layers):
                        x, res = model.layers[i](x, res, pos, model.rotary, kv[i], {}, meta)
                    drop[li, h] += dense - _answer_logprob(model, x, res, rows, answer)
                if li % 10 == 9:
                    log(f"ablation probe {s + 1}/{n}: layers 0..{li} done")
        finally:
            rec.ablate = None
        log(f"ablation probe {s + 1}/{n} done (dense answer log-likelihood {dense:.3f})")
    return drop / n


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
    ap.add_argument("--ablation-samples", type=int, default=0)
    ap.add_argument("--ablation-len", type=int, default=0)
    ap.add_argument("--reuse", help="head map made with the same settings: reuse its mass figures, run the ablation only")
    ap.add_argument("--out", default="head_map.json")
    a = ap.parse_args(argv)
    calibrate(CalibrationConfig(a.model, a.tokenizer, a.sink, a.window, a.ratio, a.seq_len, a.rows, a.out,
                                a.passkey_samples, a.ablation_samples, a.ablation_len, a.reuse))


if __name__ == "__main__":
    main()
