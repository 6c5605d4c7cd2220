"""Real English text that ships with Python itself: the language reference and library topics
of `pydoc_data.topics` (the text behind `help('...')`, about 460 KB, from the CPython docs).
Topics are split by name into disjoint calibration and held-out sets, so perplexity is never
measured on text the smoothing was fitted to.

More calibration text (docstrings()): the docstrings of the standard library's own modules
(module, class and function docstrings of the `.py` files beside `pydoc_data`, tests and demo
folders left out), about 1.6 MB. Same register as the topics (Python's documentation, written
by the same people) but a different text; any docstring that shares a run of OVERLAP_WORDS
words with the held-out topics is dropped, so the held-out text stays unseen. Only ever added
to the calibration side (calibration_text(extra=True)); the held-out half of split() is untouched.
On this machine (Python 3.11 stdlib) 2198 docstrings pass MIN_CHARS and none shares such a run.
Measured (bench/results/quant/2026-11-23-cpu-accuracy-c2-recon-x80.json): calibrating GPTQ on
640 rows (the 325 rows of topics, then docstrings) gave a held-out perplexity of 16.40 against
16.05 for the 320 rows of topics alone: more text of another kind (code-heavy docstrings) moved
the Hessians away from the held-out text, so the recipe keeps the topics alone.
"""

from __future__ import annotations

import torch

SOURCE = "CPython stdlib pydoc_data.topics (Python documentation text)"
EXTRA_SOURCE = ("CPython stdlib module/class/function docstrings (ast.get_docstring over the stdlib's .py files, "
                "no test/demo folders; docstrings sharing an 8-word run with the held-out topics dropped)")
OVERLAP_WORDS = 8
SKIP_DIRS = {"test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages", "__pycache__", "pydoc_data"}
MIN_CHARS = 200  # short docstrings are mostly signatures, not prose


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


def _ngrams(text: str, n: int = OVERLAP_WORDS) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def docstrings(exclude: str | None = None, root: str | None = None) -> str:
    """The docstrings of the .py files under `root` (default: the stdlib; sorted by file, then in
    file order), each at least MIN_CHARS long, without those sharing an OVERLAP_WORDS-word run
    with `exclude` (default: the held-out text)."""
    import ast
    import os
    import sysconfig

    banned = _ngrams(split()[1] if exclude is None else exclude)
    root = root or sysconfig.get_paths()["stdlib"]
    out = []
    for d, dirs, files in os.walk(root):  # top-down, folders pruned and sorted in place
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            try:
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_CHARS and not (_ngrams(doc) & banned):
                        out.append(doc)
    return "\n\n".join(out)


def calibration_text(extra: bool = False) -> str:
    """The calibration half of split(), then (extra=True) docstrings(): rows are cut from the
    front, so a run that asks for no more rows than the topics fill calibrates as before."""
    calib, _ = split()
    return calib + "\n\n" + docstrings() if extra else calib
