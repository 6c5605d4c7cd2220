"""The paired bootstrap interval of a perplexity ratio (quant/perplexity.ratio_interval)."""

from __future__ import annotations

import math

import pytest
import torch

from edgeserve_pod.quant.perplexity import ratio_interval


def nlls(seed: int, shape=(8, 511)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 6


def test_a_constant_shift_gives_its_exact_ratio():
    a = nlls(0)
    lo, hi = ratio_interval(a + 0.03, a)
    assert lo == pytest.approx(math.exp(0.03), rel=1e-6) and hi == pytest.approx(math.exp(0.03), rel=1e-6)


def test_the_interval_holds_the_point_ratio_and_narrows_with_more_tokens():
    a, b = nlls(1), nlls(2)
    point = math.exp(float((a - b).mean()))
    lo, hi = ratio_interval(a, b)
    assert lo < point < hi
    a4, b4 = nlls(1, (32, 511)), nlls(2, (32, 511))
    lo4, hi4 = ratio_interval(a4, b4)
    assert 0.3 < (hi4 - lo4) / (hi - lo) < 0.7  # 4x the tokens: about half the width
    with pytest.raises(ValueError, match="shapes"):
        ratio_interval(a, b[:4])
