"""Real English text that ships with Python itself: the language reference and library topics
of `pydoc_data.topics` (the text behind `help('...')`, about 460 KB, from the CPython docs).
Topics are split by name into disjoint calibration and held-out sets, so perplexity is never
measured on text the smoothing was fitted to.
"""

from __future__ import annotations

import torch

SOURCE = "CPython stdlib pydoc_data.topics (Python documentation text)"


def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as t

    return dict(sorted(t.items()))


def split(heldout_every: int = 4) -> tuple[str, str]:
    """-> (calibration text, held-out text): every `heldout_every`-th topic (by sorted name) is held out."""
    calib, held = [], []
    for i, (_, text) in enumerate(topics().items()):
        (held if i % heldout_every == 0 else calib).append(text)
    return "\n\n".join(calib), "\n\n".join(held)


def rows(ids: list[int], seq_len: int, n_rows: int) -> torch.Tensor:
    """Cut token ids into up to n_rows non-overlapping rows of seq_len: (n_rows, seq_len) int64."""
    n = min(n_rows, len(ids) // seq_len)
    if n < 1:
        raise ValueError(f"{len(ids)} tokens cannot fill one row of {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).view(n, seq_len)
