"""Perplexity of held-out token rows through the engine's own model runner (paged KV cache,
the configured linear format and KV dtype), one prefill per row with logits at every position.

With kv_dtype="fp8" the engine writes each layer's K/V into an e4m3 cache with per-head scales
and its prefill attention reads them back from that cache, so the FP8 rounding of K and V is
in the measured loss (see layers/kv_write.py, layers/attention_torch.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgeserve_pod.config import EngineConfig
from edgeserve_pod.engine.model_runner import ModelRunner
from edgeserve_pod.engine.step_inputs import StepInputs
from edgeserve_pod.models.arch import ModelArch
from edgeserve_pod.parallel import current_group


def make_runner(folder: str, quantization: str | None, kv_dtype: str, seq_len: int, device: str = "cpu") -> ModelRunner:
    cfg = EngineConfig(model=folder, device=device, quantization=quantization, kv_dtype=kv_dtype,
                       max_model_len=seq_len, max_num_batched_tokens=max(2048, seq_len), enforce_eager=True,
                       enable_prefix_caching=False, kv_cache_blocks=-(-seq_len // 16) + 2 if device == "cpu" else None)
    return ModelRunner(cfg, ModelArch.from_folder(folder), current_group(1))


@torch.inference_mode()
def token_nll(runner: ModelRunner, row: torch.Tensor) -> torch.Tensor:
    """row: (T,) int64 -> (T-1,) float32 next-token NLL at each position."""
    T = row.shape[0]
    B = runner.block_size
    nb = -(-T // B)
    inp = StepInputs(
        input_ids=row, positions=torch.arange(T), slot_mapping=torch.arange(T), num_prefill_tokens=T,
        num_decode_tokens=0, cu_seqlens_q=[0, T], cu_seqlens_k=[0, T],
        prefill_block_tables=torch.arange(nb, dtype=torch.int32)[None], decode_block_tables=None,
        decode_context_lens=None, logits_indices=torch.arange(T - 1), overrides=[None])
    logits = runner.forward(inp).float().cpu()  # (T-1, V)
    return F.cross_entropy(logits, row[1:], reduction="none")


def row_nll(runner: ModelRunner, row: torch.Tensor) -> tuple[float, int]:
    """row: (T,) int64 -> (sum of next-token NLL over T-1 predictions, T-1)."""
    nll = token_nll(runner, row)
    return float(nll.sum()), nll.numel()


def perplexity(runner: ModelRunner, rows: torch.Tensor, per_token: list | None = None) -> float:
    """rows: (R, T) int64. per_token, when given, receives each row's (T-1,) NLL."""
    nll, n = 0.0, 0
    for r in rows:
        t = token_nll(runner, r)
        if per_token is not None:
            per_token.append(t)
        nll, n = nll + float(t.sum()), n + t.numel()
    return math.exp(nll / n)


def ratio_interval(nll_a: torch.Tensor, nll_b: torch.Tensor, chunk: int = 64, n: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Paired block bootstrap of ppl_a / ppl_b on the same tokens: nll_a, nll_b (R, T-1) per-token
    NLLs; the tokens are cut into chunks of `chunk` consecutive positions (neighbouring tokens'
    losses are correlated) and chunks are resampled with replacement. -> the central `level`
    interval of the ratio."""
    if nll_a.shape != nll_b.shape:
        raise ValueError(f"per-token NLLs of different shapes: {tuple(nll_a.shape)} vs {tuple(nll_b.shape)}")
    diff = (nll_a - nll_b).double()  # (R, T-1)
    d = torch.cat([c.sum(1) for c in diff.split(chunk, dim=1)])  # (C,) per-chunk NLL difference
    cnt = torch.cat([torch.full((diff.shape[0],), c.shape[1], dtype=torch.float64) for c in diff.split(chunk, dim=1)])
    idx = torch.randint(0, d.numel(), (n, d.numel()), generator=torch.Generator().manual_seed(seed))
    ratios = torch.exp(d[idx].sum(1) / cnt[idx].sum(1))  # (n,)
    lo, hi = torch.quantile(ratios, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)
