"""SLO policy: slack-ordered admission, prefix-grouped, batch work last, preemption by SLO class.

The edge sends each request's SLO targets (protocol `SloTargets`: class, ttft_ms, tpot_ms,
deadline_ms, expected_output_tokens, priority). Slack is the same quantity the edge's router uses
(workers/src/slo/slack.ts): time left to the tightest target minus the estimated work to reach it.

- Admission order (JITServe): latency classes (interactive, compound, deadline) that can still
  meet their targets, least slack first; then the ones already past saving (their slack is below
  -`hopeless_ms`), so capacity goes to requests whose tokens still count; then requests with no
  SLO, first come first served; then batch work, which only takes the budget left over (the
  scheduler admits in this order while budget and blocks last).
- Within a slack bucket, requests that share their first `group_tokens` prompt tokens are
  admitted back to back (BatchLLM), so the shared prefix is computed once and stays cached.
- Decodes are protected (Sarathi-Serve's SLO-sized chunks): the scheduler runs decodes first, and
  while a decoding request has a TPOT target, this policy shrinks the step's token budget so that
  the step (its decodes plus the prefill chunks riding along) fits that target. Step cost is
  learned from the engine's step timings (`observe_step`: EWMA of ms per scheduled token and of a
  decode-only step); prefill still gets at least `min_prefill_tokens` per step.
- Preemption victim: lowest priority first (batch < deadline < compound < interactive), then the
  most slack, then the latest arrival.
- The output-length estimate is refined as generation goes with the edge's growth rule
  (workers/src/slo/estimator.ts): once a request has produced as many tokens as expected, the
  estimate becomes ceil(1.5 * generated), capped at max_tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from edgeserve_pod.engine.policy import SchedulingPolicy, register_policy
from edgeserve_pod.engine.sequence import Sequence

GROWTH = 1.5
LATENCY_CLASSES = ("interactive", "compound", "deadline")
DEFAULT_PRIORITY = {"batch": 1, "deadline": 5, "compound": 6, "interactive": 7}
NO_SLO_PRIORITY = 4


@dataclass
class SloPolicyConfig:
    prefill_tok_s: float = 2000.0  # assumed prefill rate until observe_rates() says otherwise
    tpot_ms: float = 50.0  # assumed time per output token
    slack_bucket_ms: float = 100.0  # slack differences below this are noise; prefix grouping decides
    hopeless_ms: float = 0.0  # slack below -hopeless_ms: the SLO is lost, serve after the savable ones
    group_tokens: int = 16  # prompt tokens that name a prefix group
    tpot_headroom: float = 0.8  # a protected step aims at this share of the tightest TPOT target
    min_prefill_tokens: int = 32  # prefill tokens a step keeps even while decodes are protected
    step_ewma: float = 0.2  # weight of the newest step in the learned step costs

    def __post_init__(self) -> None:
        for name in ("prefill_tok_s", "tpot_ms", "slack_bucket_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not isinstance(self.hopeless_ms, (int, float)) or self.hopeless_ms < 0:
            raise ValueError(f"hopeless_ms must be >= 0, got {self.hopeless_ms!r}")
        if not isinstance(self.group_tokens, int) or self.group_tokens < 1:
            raise ValueError(f"group_tokens must be a positive integer, got {self.group_tokens!r}")
        if not 0 < self.tpot_headroom <= 1 or not 0 < self.step_ewma <= 1:
            raise ValueError("tpot_headroom and step_ewma must be in (0, 1]")
        if not isinstance(self.min_prefill_tokens, int) or self.min_prefill_tokens < 1:
            raise ValueError(f"min_prefill_tokens must be a positive integer, got {self.min_prefill_tokens!r}")


def expected_output_tokens(seq: Sequence) -> int:
    """The edge's estimate, refined once the request outlives it; always > tokens generated."""
    slo = seq.slo or {}
    gen = seq.num_output_tokens
    est = int(slo.get("expected_output_tokens") or seq.params.max_tokens)
    if gen >= est:
        est = math.ceil(GROWTH * gen)
    return max(gen + 1, min(est, seq.params.max_tokens))


UPDATABLE = ("expected_output_tokens", "deadline_ms", "priority")


def apply_slo_update(seq: Sequence, changes: dict) -> None:
    """The edge's refined targets (protocol `SloUpdate`) for a request in flight: each field given
    replaces the request's value; the class stays. The policy reads `seq.slo` at every step, so the
    next admission order and preemption victim follow the new slack."""
    bad = set(changes) - set(UPDATABLE)
    if bad:
        raise ValueError(f"SLO fields {sorted(bad)} cannot be updated (only {', '.join(UPDATABLE)})")
    seq.slo = {**(seq.slo or {}), **changes}


def slo_class(seq: Sequence) -> str | None:
    return (seq.slo or {}).get("class")


def priority(seq: Sequence) -> int:
    slo = seq.slo or {}
    if "priority" in slo:
        return int(slo["priority"])
    return DEFAULT_PRIORITY.get(slo.get("class"), NO_SLO_PRIORITY)


@register_policy
class SloPolicy(SchedulingPolicy):
    name = "slo"

    def __init__(self, config: SloPolicyConfig | None = None, clock=time.monotonic):
        self.config = config or SloPolicyConfig()
        self.clock = clock
        self.ms_per_token: float | None = None  # learned: a prefill-carrying step's ms per scheduled token
        self.decode_step_ms: float | None = None  # learned: a decode-only step

    def observe_step(self, prefill_tokens: int, decode_tokens: int, seconds: float) -> None:
        a, ms = self.config.step_ewma, seconds * 1000.0
        if prefill_tokens >= self.config.min_prefill_tokens:
            per = ms / (prefill_tokens + decode_tokens)
            self.ms_per_token = per if self.ms_per_token is None else (1 - a) * self.ms_per_token + a * per
        elif prefill_tokens == 0 and decode_tokens > 0:
            self.decode_step_ms = ms if self.decode_step_ms is None else (1 - a) * self.decode_step_ms + a * ms

    def token_budget(self, running: list[Sequence], max_tokens: int) -> int:
        """While a running request decodes under a TPOT target, the step must fit that target."""
        cfg = self.config
        decoding = [s for s in running if s.first_token_time is not None and s.num_uncomputed == 1]
        tpots = [float(s.slo["tpot_ms"]) for s in decoding if s.slo and s.slo.get("tpot_ms")]
        if not tpots or self.ms_per_token is None:
            return max_tokens
        room_ms = cfg.tpot_headroom * min(tpots) - (self.decode_step_ms or 0.0)
        prefill = max(cfg.min_prefill_tokens, int(room_ms / self.ms_per_token))
        return max(1, min(max_tokens, len(decoding) + prefill))

    def observe_rates(self, prefill_tok_s: float | None = None, tpot_ms: float | None = None) -> None:
        """Measured rates from the engine's stats, when it has them."""
        if prefill_tok_s and prefill_tok_s > 0:
            self.config.prefill_tok_s = float(prefill_tok_s)
        if tpot_ms and tpot_ms > 0:
            self.config.tpot_ms = float(tpot_ms)

    def slack_ms(self, seq: Sequence, now: float | None = None) -> float:
        """min over targets of (target - elapsed - estimated work to reach it); inf without targets."""
        slo = seq.slo or {}
        now = self.clock() if now is None else now
        elapsed = (now - seq.arrival_time) * 1000.0
        prefill = 1000.0 * max(0, seq.num_prompt_tokens - seq.num_computed_tokens) / self.config.prefill_tok_s
        tpot = float(slo.get("tpot_ms") or self.config.tpot_ms)
        remaining = max(0, expected_output_tokens(seq) - seq.num_output_tokens)
        slack = math.inf
        if "ttft_ms" in slo and seq.first_token_time is None:
            slack = min(slack, slo["ttft_ms"] - elapsed - prefill)
        if "deadline_ms" in slo:
            slack = min(slack, slo["deadline_ms"] - elapsed - prefill - tpot * max(0, remaining - 1))
        return slack

    def order_waiting(self, waiting: list[Sequence]) -> list[Sequence]:
        now = self.clock()
        cfg = self.config
        keyed = []
        for seq in waiting:
            cls = slo_class(seq)
            slack = self.slack_ms(seq, now)
            if cls == "batch":
                tier, bucket = 3, 0
            elif cls is None or not math.isfinite(slack):
                tier, bucket = 2, 0
            elif slack < -cfg.hopeless_ms:
                tier, bucket = 1, -math.floor(slack / cfg.slack_bucket_ms)  # least hopeless first
            else:
                tier, bucket = 0, math.floor(slack / cfg.slack_bucket_ms)
            keyed.append(((tier, bucket), tuple(seq.token_ids[: cfg.group_tokens]), seq))
        # Each prefix group is placed at its most urgent member's position, members in arrival order.
        first: dict[tuple, tuple] = {}
        for rank_key, group, seq in keyed:
            k = (rank_key[0], rank_key[1], group)
            if k not in first or seq.arrival_order < first[k][1]:
                first[k] = (rank_key, seq.arrival_order)
        keyed.sort(key=lambda e: (e[0], first[(e[0][0], e[0][1], e[1])][1], e[2].arrival_order))
        return [seq for _, _, seq in keyed]

    def pick_victim(self, candidates: list[Sequence]) -> Sequence:
        now = self.clock()
        return min(candidates, key=lambda s: (priority(s), -self.slack_ms(s, now), -s.arrival_order))
