"""Byte-level BPE encoder from a GGUF file's tokenizer (tokenizer.ggml.model == "gpt2"), for
turning evaluation text into the model's token ids on CPU.

The pre-tokenizer is the GPT-2 pattern with digits split one by one (what llama.cpp calls the
"smollm" pre-tokenizer), written with Python's `re`: letters are approximated by [^\\W\\d_]
(Unicode-aware), which matches \\p{L} on the ASCII and Latin text used here. Ranks come from the
merge list; no special tokens are parsed out of the text.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+|\d| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (space -> 'Ġ', ...)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BPETokenizer:
    def __init__(self, tokens: list[str], merges: list[str]):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.b2u = _byte_to_unicode()
        self._bpe = lru_cache(maxsize=65536)(self._bpe_word)

    @classmethod
    def from_gguf(cls, path: str) -> "BPETokenizer":
        from gguf import GGUFReader

        r = GGUFReader(path)
        model = r.fields["tokenizer.ggml.model"].contents()
        if model != "gpt2":
            raise ValueError(f"{path}: tokenizer model {model!r} is not byte-level BPE ('gpt2')")
        return cls(r.fields["tokenizer.ggml.tokens"].contents(), r.fields["tokenizer.ggml.merges"].contents())

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        out = []
        for p in parts:
            if p not in self.vocab:
                raise ValueError(f"BPE piece {p!r} is not in the vocabulary")
            out.append(self.vocab[p])
        return tuple(out)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PAT.findall(text):
            ids.extend(self._bpe("".join(self.b2u[b] for b in piece.encode("utf-8"))))
        return ids
