"""LLMEngine: requests in, tokens out. step() = schedule -> run -> postprocess."""

from __future__ import annotations

import logging
import time

import torch
import torch.distributed as dist

from edgeserve_pod.config import EngineConfig
from edgeserve_pod.engine.block_manager import BlockManager
from edgeserve_pod.engine.model_runner import ModelRunner
from edgeserve_pod.engine.outputs import EngineStats, StepOutput
from edgeserve_pod.engine.policy import make_policy
from edgeserve_pod.engine.policy_slo import apply_slo_update
from edgeserve_pod.engine.scheduler import ScheduledBatch, Scheduler
from edgeserve_pod.engine.tp_launch import launch_tp
from edgeserve_pod.engine.sequence import SamplingParams, Sequence, SeqStatus
from edgeserve_pod.models.arch import ModelArch
from edgeserve_pod.parallel import current_group

log = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.arch = ModelArch.from_folder(config.model)
        self._workers: list = []
        if config.tensor_parallel_size > 1 and not dist.is_initialized():
            self._workers = launch_tp(config)
        self.tp = current_group(config.tensor_parallel_size)
        self.runner = ModelRunner(config, self.arch, self.tp)
        self.model_id = config.model_id
        self.block_size = config.block_size
        # A sequence can never outgrow the KV cache, so its token capacity bounds the length too:
        # a request that reaches it ends with "length" (vLLM refuses to start instead; here
        # kv_cache_blocks may be set small on purpose). Without this, a sequence that needs more
        # blocks than exist preempts itself and waits forever at the head of the queue.
        kv_tokens = self.runner.num_blocks * config.block_size
        self.max_model_len = min(self.runner.max_model_len, kv_tokens)
        if kv_tokens < self.runner.max_model_len:
            log.warning("the KV cache holds %d tokens, fewer than max_model_len %d: sequences end at %d tokens",
                        kv_tokens, self.runner.max_model_len, kv_tokens)
        self.eos_token_ids: tuple[int, ...] = self.arch.eos_token_ids
        self.blocks = BlockManager(self.runner.num_blocks, config.block_size, config.model_id, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, make_policy(config.scheduling_policy),
                                   config.max_num_batched_tokens, config.max_num_seqs,
                                   ring_slots=config.streaming_kv == "ring")
        self._seqs: dict[str, Sequence] = {}
        self._pending: list[StepOutput] = []  # "cancelled" outputs reported by the next step()

    # ---- requests ----
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    slo: dict | None = None, attention: dict | None = None) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        if request_id in self._seqs:
            raise ValueError(f"request_id {request_id!r} is already running")
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("prompt_token_ids is empty")
        V = self.arch.vocab_size
        bad = next((t for t in prompt_token_ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < V), None)
        if bad is not None:
            raise ValueError(f"prompt token {bad!r} is not an integer in [0, {V})")
        if n >= self.max_model_len:
            raise ValueError(f"prompt has {n} tokens; this pod serves at most {self.max_model_len - 1} prompt tokens "
                             f"(max_model_len {self.runner.max_model_len}, KV cache {self.blocks.num_blocks * self.block_size} tokens)")
        # bad overrides are refused here (OverrideError, a ValueError), never inside a step,
        # where they would fail every request in flight
        attention = self.runner.attn.check_request_overrides(attention)
        seq = Sequence(request_id, prompt_token_ids, params, slo, attention)
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.runner.device)
            seq.generator.manual_seed(params.seed)
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def update_slo(self, request_id: str, changes: dict) -> bool:
        """Refined SLO targets from the edge (policy_slo.apply_slo_update); False if not in flight."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return False
        apply_slo_update(seq, changes)
        return True

    def abort_request(self, request_id: str) -> bool:
        """Stop a request and free its KV blocks now; its last output says "cancelled"."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.remove(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = "cancelled"
        self._pending.append(self._output(seq, []))
        return True

    # ---- the loop ----
    def step(self) -> list[StepOutput]:
        outputs, self._pending = self._pending, []
        self.last_step = (0, 0)
        batch = self.scheduler.schedule()
        if batch.empty:
            return outputs
        t0 = time.perf_counter()
        k = self._decode_steps(batch)
        if k > 1:
            rows = self.runner.execute_multi(batch, k)
            self.scheduler.policy.observe_step(0, len(batch.items), (time.perf_counter() - t0) / k)
            return outputs + self._postprocess_multi(batch, rows)
        tokens = self.runner.execute(batch)
        n_prefill = sum(n for _, n in batch.items[:batch.num_prefill_seqs])
        self.last_step = (n_prefill, len(batch.items) - batch.num_prefill_seqs)  # (prefill tokens, decode rows)
        self.scheduler.policy.observe_step(*self.last_step, time.perf_counter() - t0)
        return outputs + self._postprocess(batch, tokens)

    def has_unfinished(self) -> bool:
        return bool(self._seqs) or bool(self._pending)

    def stats(self) -> EngineStats:
        s, b = self.scheduler, self.blocks
        free = b.num_free_blocks
        return EngineStats(
            running=len(s.running), waiting=len(s.waiting), free_blocks=free, total_blocks=b.num_blocks,
            kv_usage=1.0 - free / b.num_blocks,
            waiting_prefill_tokens=sum(q.num_uncomputed for q in s.waiting)
            + sum(q.num_uncomputed - 1 for q in s.running if q.num_uncomputed > 1),
            prefix_hit_tokens=b.prefix_hit_tokens, prefix_query_tokens=b.prefix_query_tokens,
            num_preemptions=s.num_preemptions, cached_blocks=b.cache.num_cached_blocks())

    def drain_kv_events(self) -> list[dict]:
        return self.blocks.drain_events()

    def shutdown(self) -> None:
        """Stop tensor-parallel workers (no-op at tensor_parallel_size 1)."""
        self.runner.shutdown()
        for p in self._workers:
            p.join(timeout=30)
        if self._workers:
            dist.destroy_process_group()
            self._workers = []

    # ---- helpers ----
    def _postprocess(self, batch: ScheduledBatch, tokens: list[int | None]) -> list[StepOutput]:
        out: list[StepOutput] = []
        now = time.monotonic()
        for (seq, n), tok in zip(batch.items, tokens):
            seq.num_computed_tokens += n
            if tok is None:
                self.blocks.commit(seq)
                continue
            seq.token_ids.append(tok)
            if seq.first_token_time is None:
                seq.first_token_time = now
            self.blocks.commit(seq)
            reason = self._finish_reason(seq, tok)
            if reason is not None:
                seq.status = SeqStatus.FINISHED
                seq.finish_reason = reason
                self.scheduler.remove(seq)
                del self._seqs[seq.request_id]
            out.append(self._output(seq, [tok]))
        return out

    def _decode_steps(self, batch: ScheduledBatch) -> int:
        """How many decode steps to run for this batch without returning to the scheduler
        (config.num_decode_steps; 1 unless only decodes run and nothing waits). Every sequence
        gets the blocks for all of them up front; if the pool cannot give them, one step."""
        k = self.config.num_decode_steps
        if k <= 1 or self.scheduler.waiting or not self.runner.supports_multi_step(batch):
            return 1
        for seq, n in batch.items:
            if n != 1 or seq.num_uncomputed != 1:
                return 1
            k = min(k, seq.params.max_tokens - seq.num_output_tokens, self.max_model_len - len(seq))
        if k <= 1:
            return 1
        for seq, _ in batch.items:
            if not self.blocks.grow(seq, len(seq) + k - 1):
                return 1  # blocks already grown stay with their sequences and serve later steps
        return k

    def _postprocess_multi(self, batch: ScheduledBatch, rows: list[list[int]]) -> list[StepOutput]:
        """Apply k steps' tokens in order, as k single steps would; a sequence that finishes
        drops its later tokens. One output per request with all its new tokens."""
        merged: dict[str, StepOutput] = {}
        live = list(enumerate(batch.items))
        for step in rows:
            tokens = [step[i] for i, _ in live]
            for o in self._postprocess(ScheduledBatch(items=[item for _, item in live]), tokens):
                if o.request_id in merged:
                    o.new_token_ids = merged[o.request_id].new_token_ids + o.new_token_ids
                merged[o.request_id] = o
            live = [(i, item) for i, item in live if not item[0].is_finished]
            if not live:
                break
        return list(merged.values())

    def _finish_reason(self, seq: Sequence, tok: int) -> str | None:
        p = seq.params
        if tok in p.stop_token_ids or (not p.ignore_eos and tok in self.eos_token_ids):
            return "stop"
        if seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:  # model or KV cache limit
            return "length"
        return None

    @staticmethod
    def _output(seq: Sequence, new: list[int]) -> StepOutput:
        return StepOutput(seq.request_id, new, seq.is_finished, seq.finish_reason, seq.num_prompt_tokens,
                          seq.num_cached_tokens, seq.num_output_tokens)
