"""Sampling on the device: greedy, temperature, top-k, top-p, per-request seeds.

Sampling uses the exponential race (argmax of p / E with E ~ Exp(1)), which draws from p
exactly; a seeded request draws its E from its own torch.Generator, so its tokens do not
depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeserve_pod.engine.sequence import SAMPLING_EPS
from edgeserve_pod.kernels.argmax import argmax_rows


@dataclass
class SamplingBatch:
    temperature: torch.Tensor  # (n,) float32, < SAMPLING_EPS = greedy
    top_k: torch.Tensor  # (n,) int64, 0 = off
    top_p: torch.Tensor  # (n,) float32, 1 = off
    generators: list  # n entries: torch.Generator or None (shared generator)
    all_greedy: bool
    any_top_k: bool
    any_top_p: bool


class Sampler:
    def __init__(self, device: torch.device, seed: int):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:  # (n, V) f32 -> (n,) int64
        greedy = argmax_rows(logits)  # two-stage Triton argmax on CUDA (torch's is one CTA per row)
        if b.all_greedy:
            return greedy
        sample = b.temperature >= SAMPLING_EPS  # (n,) bool
        temp = torch.where(sample, b.temperature, torch.ones_like(b.temperature))
        logits = logits / temp[:, None]
        if b.any_top_k or b.any_top_p:
            logits = self._mask_top(logits, b)
        # a row whose logits hold +inf or NaN (the model overflowed) has no distribution to draw
        # from (softmax gives NaN, and the argmax of NaN is token 0): it takes the greedy token
        sample &= torch.isfinite(logits.amax(dim=-1))
        probs = torch.softmax(logits, dim=-1)
        e = torch.empty_like(probs)
        shared = [i for i, g in enumerate(b.generators) if g is None]
        if len(shared) == len(b.generators):
            e.exponential_(generator=self.generator)
        else:
            for i, g in enumerate(b.generators):
                e[i].exponential_(generator=g if g is not None else self.generator)
        sampled = (probs / e).argmax(dim=-1)
        return torch.where(sample, sampled, greedy)

    @staticmethod
    def _mask_top(logits: torch.Tensor, b: SamplingBatch) -> torch.Tensor:
        V = logits.shape[-1]
        sorted_logits, idx = logits.sort(dim=-1, descending=True)  # (n, V)
        rank = torch.arange(V, device=logits.device)[None, :]
        k = torch.where(b.top_k > 0, b.top_k, torch.full_like(b.top_k, V))
        drop = rank >= k[:, None]
        if b.any_top_p:
            p = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
            before = p.cumsum(dim=-1) - p  # mass strictly before each token
            drop |= before >= b.top_p[:, None]  # the token that crosses top_p stays
        # the top-ranked token always stays: a top_p below float32's range is 0.0 here and would
        # drop every token
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(1, idx, sorted_logits)
