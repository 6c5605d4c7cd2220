"""What the engine hands back: per-step outputs and load statistics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepOutput:
    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "cancelled" | None while running
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int


@dataclass
class EngineStats:
    running: int
    waiting: int
    free_blocks: int  # blocks an allocation can take now (free + evictable cached)
    total_blocks: int
    kv_usage: float  # 1 - free_blocks / total_blocks
    waiting_prefill_tokens: int  # uncomputed tokens of waiting and partially prefilled sequences
    prefix_hit_tokens: int  # cumulative prompt tokens served from the prefix cache
    prefix_query_tokens: int  # cumulative prompt tokens looked up
    num_preemptions: int = 0
    cached_blocks: int = 0  # blocks holding a registered hash (in use or evictable)
    extra: dict = field(default_factory=dict)
