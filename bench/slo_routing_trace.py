"""The Mooncake trace (../shared/traces/README.md), scaled for CPU pods, with SLO classes.

Scaling: every length (input, output, the 512-token hash block) is divided by `len_scale`;
arrival times are divided by `time_scale` (chosen for the pods' speed; both go in the results).
Hash id h becomes a fixed block of 512/len_scale token ids drawn from Random(h), so equal ids give
equal tokens and the edge's block hashing sees the trace's sharing. The last block is cut to the
scaled input length.

Classes (the trace has none; assigned deterministically, per the issue's mix):
  - batch: 20% of requests (seeded draw) - throughput work, a loose deadline;
  - interactive: a request whose first block was seen before (multi-turn chat, shared system
    prompt) - TTFT and TPOT targets;
  - deadline: the rest (single-shot, RAG-style long prompts) - a whole-answer deadline.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

TRACE_BLOCK = 512
VOCAB_LO, VOCAB_HI = 3, 49000  # inside smollm2's vocabulary, clear of its special tokens


@dataclass
class TraceRequest:
    index: int
    arrival_s: float
    prompt: list[int]
    max_tokens: int
    cls: str


def block_tokens(hash_id: int, n: int) -> list[int]:
    rng = random.Random(hash_id * 7919 + 17)
    return [rng.randrange(VOCAB_LO, VOCAB_HI) for _ in range(n)]


def load(path: str, start: int, n: int, len_scale: int, time_scale: float, batch_share: float = 0.2,
         seed: int = 0) -> list[TraceRequest]:
    """Requests [start, start + n) of the trace; times start at 0; classes see only the window."""
    if TRACE_BLOCK % len_scale:
        raise ValueError(f"len_scale must divide {TRACE_BLOCK}, got {len_scale}")
    blk = TRACE_BLOCK // len_scale
    rng = random.Random(seed)
    seen_first: set[int] = set()
    out: list[TraceRequest] = []
    cache: dict[int, list[int]] = {}
    with open(path) as f:
        for i, line in enumerate(f):
            if i >= start + n:
                break
            if i < start:
                continue
            r = json.loads(line)
            length = max(1, round(r["input_length"] / len_scale))
            toks: list[int] = []
            for h in r["hash_ids"]:
                if h not in cache:
                    cache[h] = block_tokens(h, blk)
                toks += cache[h]
            prompt = toks[:length]
            first = r["hash_ids"][0] if r["hash_ids"] else -1
            if rng.random() < batch_share:
                cls = "batch"
            elif first in seen_first:
                cls = "interactive"
            else:
                cls = "deadline"
            seen_first.add(first)
            out.append(TraceRequest(i, r["timestamp"] / 1000.0 / time_scale, prompt,
                                    max(2, round(r["output_length"] / len_scale)), cls))
    t0 = out[0].arrival_s if out else 0.0
    for r in out:
        r.arrival_s -= t0
    return out
