"""Prometheus metrics of one pod: latency (TTFT, TPOT, end to end), queue, KV cache, prefix cache.

One CollectorRegistry per PodMetrics (not the process-global one), so several apps can live in
one process (tests) and /metrics shows only pod metrics. Histograms and counters are fed by the
engine thread as requests progress; gauges are set from the load snapshot after every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from edgeserve_pod.server.engine_loop import LoadSnapshot

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

P = "edgeserve_pod_"


class PodMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ttft = Histogram(P + "time_to_first_token_seconds", "Request received to first token out", buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram(P + "time_per_output_token_seconds", "Per request: (last token - first token) / (output tokens - 1)", buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram(P + "request_duration_seconds", "Request received to final record", buckets=_E2E_BUCKETS, registry=r)
        self.finished = Counter(P + "requests_finished", "Requests that ended with a final record, by finish_reason", ["finish_reason"], registry=r)
        self.errors = Counter(P + "request_errors", "Requests refused or failed, by protocol error code", ["code"], registry=r)
        self.prompt_tokens = Counter(P + "prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_tokens = Counter(P + "cached_prompt_tokens", "Prompt tokens of finished requests served from the prefix cache", registry=r)
        self.output_tokens = Counter(P + "generation_tokens", "Output tokens of finished requests", registry=r)
        self.running = Gauge(P + "requests_running", "Sequences in the running batch", registry=r)
        self.waiting = Gauge(P + "requests_waiting", "Queue depth: sequences waiting to be scheduled", registry=r)
        self.waiting_prefill = Gauge(P + "waiting_prefill_tokens", "Prompt tokens not yet prefilled", registry=r)
        self.kv_usage = Gauge(P + "kv_cache_usage_ratio", "Share of KV blocks in use (1 - free/total)", registry=r)
        self.free_blocks = Gauge(P + "kv_free_blocks", "KV blocks an allocation can take now", registry=r)
        self.total_blocks = Gauge(P + "kv_total_blocks", "KV blocks in the pool", registry=r)
        self.hit_rate = Gauge(P + "prefix_cache_hit_rate", "Prefix-cache hit tokens / looked-up prompt tokens, since start", registry=r)
        self.preemptions = Gauge(P + "preemptions", "Preemptions since start (recompute)", registry=r)
        self.decode_tok_s = Gauge(P + "decode_tokens_per_second", "Output tokens per second over the last 10 s", registry=r)
        self.prefill_tok_s = Gauge(P + "prefill_tokens_per_second", "Prompt tokens computed per second over the last 10 s", registry=r)
        self.decode_step_ms = Gauge(P + "decode_step_milliseconds", "Mean duration of the steps that produced tokens, over the last 3 s", registry=r)

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_finish(self, reason: str, prompt: int, cached: int, output: int, total_s: float,
                       since_first_s: float | None) -> None:
        self.finished.labels(finish_reason=reason).inc()
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self.output_tokens.inc(output)
        self.e2e.observe(total_s)
        if since_first_s is not None and output > 1:
            self.tpot.observe(since_first_s / (output - 1))

    def observe_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def update_load(self, load: LoadSnapshot) -> None:
        self.running.set(load.running)
        self.waiting.set(load.waiting)
        self.waiting_prefill.set(load.waiting_prefill_tokens)
        self.kv_usage.set(load.kv_usage)
        self.free_blocks.set(load.free_blocks)
        self.total_blocks.set(load.total_blocks)
        self.hit_rate.set(load.prefix_hit_tokens / load.prefix_query_tokens if load.prefix_query_tokens else 0.0)
        self.preemptions.set(load.num_preemptions)
        self.decode_tok_s.set(load.decode_tok_s)
        self.prefill_tok_s.set(load.prefill_tok_s)
        self.decode_step_ms.set(load.decode_step_ms)

    def render(self) -> bytes:
        return generate_latest(self.registry)
