"""A request inside the engine: its tokens, its KV block table and its sampling parameters."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field


TOP_K_MAX = 2**31 - 1  # the protocol schema's maximum for sampling.top_k
# A temperature below this samples greedily (vLLM's rule): logits / T overflows float32 to inf
# near T = 1e-38, and the softmax of inf is NaN. At 1e-5 the distribution is already one-hot.
SAMPLING_EPS = 1e-5


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # below SAMPLING_EPS = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off; a value >= the vocabulary keeps every token, like 0
    seed: int | None = None  # per-request generator; None = the engine's shared generator
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be a number in [0, 2], got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        # bounded so that it fits the int64 tensor the sampler builds (and int32 kernels): a top_k that
        # overflowed there used to fail the whole engine step, every request in flight with it
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or not 0 <= self.top_k <= TOP_K_MAX:
            raise ValueError(f"top_k must be an integer in [0, {TOP_K_MAX}], got {self.top_k!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be None or an integer in [0, 2^63), got {self.seed!r}")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")
        self.temperature = float(self.temperature)
        self.top_p = float(self.top_p)

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_arrival = itertools.count()


class Sequence:
    """Token ids (prompt + output), how many have KV in the cache, and the block table."""

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                 slo: dict | None = None, attention: dict | None = None):
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.slo = slo
        self.attention = attention
        self.status = SeqStatus.WAITING
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache (first admission)
        self.block_table: list[int] = []
        self.ring_slot: int | None = None  # streaming_kv="ring": its ring while running (scheduler.RingSlots)
        self.block_hashes: list[bytes] = []  # hashes of the full blocks already registered/looked up
        self.finish_reason: str | None = None
        self.arrival_order = next(_arrival)
        self.arrival_time = time.monotonic()
        self.first_token_time: float | None = None
        self.num_preemptions = 0
        self.generator = None  # torch.Generator for seeded sampling, made by the engine

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SeqStatus.FINISHED

    def num_blocks_for(self, num_tokens: int, block_size: int) -> int:
        return (num_tokens + block_size - 1) // block_size
