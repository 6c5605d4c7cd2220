"""Scheduling policy: the order of the waiting queue and the choice of preemption victim.

A small pluggable object so that other policies (e.g. SLO slack) are sibling classes registered
by name; `EngineConfig.scheduling_policy` picks one."""

from __future__ import annotations

from edgeserve_pod.engine.sequence import Sequence


class SchedulingPolicy:
    name = "abstract"

    def order_waiting(self, waiting: list[Sequence]) -> list[Sequence]:
        """Waiting sequences in the order they should be admitted (first = next)."""
        raise NotImplementedError

    def pick_victim(self, candidates: list[Sequence]) -> Sequence:
        """The running sequence to preempt (recompute) when KV blocks run out."""
        raise NotImplementedError

    def token_budget(self, running: list[Sequence], max_tokens: int) -> int:
        """Tokens the next step may schedule (default: the configured budget)."""
        return max_tokens

    def observe_step(self, prefill_tokens: int, decode_tokens: int, seconds: float) -> None:
        """How long the last step took (the engine reports every step); policies may learn from it."""


class FCFSPolicy(SchedulingPolicy):
    """First come, first served; the latest arrival is preempted first (vLLM's default)."""

    name = "fcfs"

    def order_waiting(self, waiting: list[Sequence]) -> list[Sequence]:
        return sorted(waiting, key=lambda s: s.arrival_order)

    def pick_victim(self, candidates: list[Sequence]) -> Sequence:
        return max(candidates, key=lambda s: s.arrival_order)


POLICIES: dict[str, type[SchedulingPolicy]] = {FCFSPolicy.name: FCFSPolicy}


def register_policy(cls: type[SchedulingPolicy]) -> type[SchedulingPolicy]:
    """Class decorator: make a policy selectable by `EngineConfig.scheduling_policy`."""
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str) -> SchedulingPolicy:
    if name not in POLICIES:
        raise ValueError(f"unknown scheduling_policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name]()


# Sibling policies register themselves on import (kept last: they import this module).
from edgeserve_pod.engine import policy_slo as _policy_slo  # noqa: E402,F401  ("slo")
