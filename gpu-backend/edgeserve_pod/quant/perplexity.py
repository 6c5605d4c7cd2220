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
def row_nll(runner: ModelRunner, row: torch.Tensor) -> tuple[float, int]:
    """row: (T,) int64 -> (sum of next-token NLL over T-1 predictions, T-1)."""
    T = row.shape[0]
    B = runner.block_size
    nb = -(-T // B)
    inp = StepInputs(
        input_ids=row, positions=torch.arange(T), slot_mapping=torch.arange(T), num_prefill_tokens=T,
        num_decode_tokens=0, cu_seqlens_q=[0, T], cu_seqlens_k=[0, T],
        prefill_block_tables=torch.arange(nb, dtype=torch.int32)[None], decode_block_tables=None,
        decode_context_lens=None, logits_indices=torch.arange(T - 1), overrides=[None])
    logits = runner.forward(inp).float().cpu()  # (T-1, V)
    return float(F.cross_entropy(logits, row[1:], reduction="sum")), T - 1


def perplexity(runner: ModelRunner, rows: torch.Tensor) -> float:
    nll, n = 0.0, 0
    for r in rows:
        a, b = row_nll(runner, r)
        nll, n = nll + a, n + b
    return math.exp(nll / n)
