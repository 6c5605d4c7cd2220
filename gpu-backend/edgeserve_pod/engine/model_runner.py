"""Model runner: owns the model, the paged KV cache and the decode CUDA graphs; turns a
scheduled batch into sampled tokens.

Rank 0 packs the step (StepInputs) and, under tensor parallelism, broadcasts it; every rank
runs the same forward; rank 0 samples.
"""

from __future__ import annotations

import importlib
import inspect
import logging

import torch
import torch.distributed as dist

from edgeserve_pod.config import EngineConfig
from edgeserve_pod.engine.cuda_graphs import RING, DecodeGraphs, GraphPool, PrefillGraphs
from edgeserve_pod.engine.sampler import Sampler, SamplingBatch
from edgeserve_pod.engine.scheduler import ScheduledBatch
from edgeserve_pod.engine.step_inputs import StepInputs, build_step_inputs
from edgeserve_pod.layers.kv_write import FP8_DTYPE
from edgeserve_pod.layers.linear_bf16 import Bf16LinearFactory
from edgeserve_pod.models.arch import ModelArch
from edgeserve_pod.models.llama import LlamaModel
from edgeserve_pod.models.loader import load_weights
from edgeserve_pod.parallel import TPGroup

# name -> (module, class) of attention backends and linear formats; imported on demand so that
# a backend that needs a GPU (Triton) is never imported on the CPU path.
ATTENTION_BACKENDS = {"torch": ("edgeserve_pod.layers.attention_torch", "TorchAttention"),
                      "triton": ("edgeserve_pod.layers.attention_triton", "TritonAttention"),
                      "sparse": ("edgeserve_pod.layers.attention_sparse", "SparseAttention"),
                      "sparse-ring": ("edgeserve_pod.layers.attention_sparse_ring", "RingSparseAttention")}
LINEAR_FORMATS = {"w4a16": ("edgeserve_pod.layers.linear_w4a16", "W4A16LinearFactory")}
CPU_KV_BLOCKS = 1024
log = logging.getLogger(__name__)
PREFILL_GRAPH_SEQS = 4  # sequences one short-prefill graph takes (more go eager)


def _import(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(table)}")
    mod, cls = table[name]
    try:
        return getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {name!r} is not available ({mod}.{cls}: {e})") from e


class ModelRunner:
    def __init__(self, config: EngineConfig, arch: ModelArch, tp: TPGroup):
        self.config, self.arch, self.tp = config, arch, tp
        if config.device == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device='cuda' but torch sees no CUDA device")
            self.device = torch.device("cuda", tp.rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.dtype = config.torch_dtype
        self.block_size = config.block_size
        self.max_model_len = config.max_model_len or min(arch.max_position_embeddings, 8192)
        if self.max_model_len > arch.max_position_embeddings:
            raise ValueError(f"max_model_len {self.max_model_len} exceeds the model's max_position_embeddings "
                             f"{arch.max_position_embeddings}")
        self.max_blocks_per_seq = (self.max_model_len + self.block_size - 1) // self.block_size

        self.kv_dtype = FP8_DTYPE if config.kv_dtype == "fp8" else self.dtype
        self.ring = config.streaming_kv == "ring"  # streaming heads' K/V in per-sequence rings
        backend = "sparse-ring" if self.ring else config.attention_backend
        attn_cls = _import(ATTENTION_BACKENDS, backend, "attention_backend")
        params = inspect.signature(attn_cls).parameters
        extra = {"kv_dtype": self.kv_dtype} if "kv_dtype" in params else {}
        if "num_layers" in params:  # a backend with per-layer config checks it against the model
            extra["num_layers"] = arch.num_layers
        if config.sparse_head_map is not None:
            from edgeserve_pod.layers.attention_sparse import SparseAttentionConfig

            extra["config"] = SparseAttentionConfig.from_head_map(config.sparse_head_map)
        if self.ring:
            extra.update(block_size=self.block_size, ring_slots=config.max_num_seqs, ring_chunk=config.max_num_batched_tokens)
        self.attn = attn_cls(arch.num_heads // tp.size, arch.num_kv_heads // tp.size, arch.head_dim, **extra)
        if config.quantization is None:
            lin = Bf16LinearFactory(self.dtype, self.device)
        else:
            lin = _import(LINEAR_FORMATS, config.quantization, "quantization")(self.dtype, self.device)
        with torch.device(self.device):
            self.model = LlamaModel(arch, lin, self.attn, tp, self.dtype, self.device, self.max_model_len)
        load_weights(self.model, config.model)
        self.model.eval()

        self.graphs: DecodeGraphs | None = None
        self.prefill_graphs: PrefillGraphs | None = None
        self._multi_host: list[torch.Tensor] = []  # pinned staging buffers of multi-step decode
        self.num_blocks = self._decide_num_blocks()
        self._allocate_kv(self.num_blocks)
        if self.ring:
            log.info("streaming_kv='ring': paged KV %d blocks x %d bytes = %.2f GiB (retrieval heads), rings %d slots "
                     "x %d pages = %.2f GiB (streaming heads)", self.num_blocks, self.block_bytes(),
                     self.num_blocks * self.block_bytes() / 2**30, config.max_num_seqs, self.attn.geo.pages_per_slot,
                     self.attn.ring_bytes(arch.num_layers) / 2**30)
        if config.kv_dtype == "fp8":
            self._calibrate_fp8()
            if hasattr(self.attn, "fp8_scales_ready"):
                self.attn.fp8_scales_ready = True  # from now on the KV write may be fused (scales fixed)
        self.sampler = Sampler(self.device, config.seed)
        if config.device == "cuda" and not config.enforce_eager:
            pool = GraphPool(self.device)
            self.graphs = DecodeGraphs(self.model, self.kv_caches, self.states, min(config.cuda_graph_max_batch, config.max_num_seqs),
                                       self.max_blocks_per_seq, self.num_blocks, self.block_size, self.device,
                                       width_buckets=config.attention_backend == "torch", pool=pool,
                                       overrides_ok=not self.attn.uses_request_overrides,
                                       scratch_ring_slot=self.scratch_ring_slot)
            # short prefills: only the Triton backend's prefill takes every size from device tensors
            max_t = min(config.cuda_graph_max_prefill_tokens, config.max_num_batched_tokens)
            if config.attention_backend == "triton" and max_t > 0:
                self.prefill_graphs = PrefillGraphs(self.model, self.kv_caches, self.states, max_t,
                                                    min(PREFILL_GRAPH_SEQS, config.max_num_seqs), self.max_blocks_per_seq,
                                                    self.num_blocks, self.block_size, self.device, pool=pool)
            if config.attention_backend != "torch":
                with torch.inference_mode():
                    self.graphs.capture_all()
                    if self.prefill_graphs is not None:
                        self.prefill_graphs.capture_all()

    # ---- per step ----
    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch) -> list[int | None]:
        """Sampled token per batch item (None for a prefill chunk that is not the last)."""
        inp, rows = build_step_inputs(batch, self.block_size)
        if self.tp.size > 1:
            dist.broadcast_object_list([inp], src=0)
        graph_step = self.graphs is not None and self.graphs.supports(inp)
        logits = self.forward(inp)
        if logits.shape[0] == 0:
            return [None] * len(rows)
        sb = self._sampling_batch(batch, rows)
        if graph_step and sb.all_greedy:  # the decode graph's own argmax already chose them
            tokens = self.graphs.greedy_tokens(logits.shape[0]).tolist()
        else:
            tokens = self.sampler(logits, sb).tolist()
        return [tokens[r] if r >= 0 else None for r in rows]

    def supports_multi_step(self, batch: ScheduledBatch) -> bool:
        """Whether execute_multi can run this batch: decode-only, one rank (and within the
        decode graphs' batch when there are graphs)."""
        return (self.tp.size == 1 and batch.num_prefill_seqs == 0 and len(batch.items) > 0
                and (self.graphs is None or len(batch.items) <= self.graphs.max_bs))

    @torch.inference_mode()
    def execute_multi(self, batch: ScheduledBatch, k: int) -> list[list[int]]:
        """k decode steps of a decode-only batch back to back, tokens fed back on the device,
        one host sync at the end (multi-step scheduling): (k, n) sampled tokens. The caller has
        grown every sequence's blocks to hold len(seq) + k - 1 tokens; tokens after a stop are
        computed and then dropped by the engine."""
        inp, rows = build_step_inputs(batch, self.block_size)
        graphs = self.graphs if self.graphs is not None and self.graphs.supports(inp) else None
        sb = self._sampling_batch(batch, rows)
        if graphs is not None and sb.all_greedy and k <= RING:  # k replays of one graph, no host work between
            return graphs.run_greedy(inp, k)
        while graphs is not None and len(self._multi_host) < k:  # one pinned staging buffer per queued step
            self._multi_host.append(graphs.new_host_buffer())
        B = self.block_size
        tables = inp.decode_block_tables.long()  # (n, W)
        pos0, ctx0 = inp.positions.clone(), inp.decode_context_lens.clone()
        toks, ids = [], None
        for j in range(k):
            if j:
                pos = pos0 + j
                inp.positions = pos
                inp.slot_mapping = tables.gather(1, (pos // B)[:, None])[:, 0] * B + pos % B
                inp.decode_context_lens = ctx0 + j
            if graphs is not None:
                logits = graphs.run(inp, ids=ids, host=self._multi_host[j])
            else:  # eager (CPU, or no graphs): the same steps without the overlap
                if ids is not None:
                    inp.input_ids = ids
                logits = self.forward(inp)
            ids = self.sampler(logits, sb)
            toks.append(ids)
        return torch.stack(toks).tolist()

    def forward(self, inp: StepInputs) -> torch.Tensor:  # -> (n_s, V) float32
        if self.graphs is not None and self.graphs.supports(inp):
            return self.graphs.run(inp)
        if self.prefill_graphs is not None and self.prefill_graphs.supports(inp):
            return self.prefill_graphs.run(inp)
        meta = inp.to_metadata(self.device)
        ids, pos = inp.input_ids.to(self.device, non_blocking=True), inp.positions.to(self.device, non_blocking=True)
        if inp.num_prefill_tokens == 0:  # decode only: every row is sampled (ScheduledBatch)
            return self.model.logits(ids, pos, self.kv_caches, self.states, meta)
        hidden = self.model(ids, pos, self.kv_caches, self.states, meta)
        return self.model.compute_logits(hidden[inp.logits_indices.to(self.device, non_blocking=True)])

    @torch.inference_mode()
    def worker_loop(self) -> None:
        """Ranks > 0: run whatever rank 0 broadcasts, until it sends None."""
        while True:
            box = [None]
            dist.broadcast_object_list(box, src=0)
            if box[0] is None:
                return
            self.forward(box[0])

    def shutdown(self) -> None:
        if self.tp.size > 1 and self.tp.rank == 0:
            dist.broadcast_object_list([None], src=0)

    def _sampling_batch(self, batch: ScheduledBatch, rows: list[int]) -> SamplingBatch:
        params = [(seq.params, seq.generator) for (seq, _), r in zip(batch.items, rows) if r >= 0]
        if all(p.greedy for p, _ in params):
            return SamplingBatch(None, None, None, [], True, False, False)
        d = self.device
        return SamplingBatch(
            temperature=torch.tensor([p.temperature for p, _ in params], dtype=torch.float32).to(d),
            top_k=torch.tensor([p.top_k for p, _ in params], dtype=torch.int64).to(d),
            top_p=torch.tensor([p.top_p for p, _ in params], dtype=torch.float32).to(d),
            generators=[g for _, g in params], all_greedy=False,
            any_top_k=any(p.top_k > 0 for p, _ in params), any_top_p=any(p.top_p < 1.0 for p, _ in params))

    # ---- start-up ----
    def block_bytes(self) -> int:
        """Bytes of one paged-cache block over all layers (ring mode: retrieval heads only)."""
        a = self.arch
        if self.ring:
            return self.attn.bytes_per_block(a.num_layers, self.block_size)
        elem = torch.empty(0, dtype=self.kv_dtype).element_size()
        return a.num_layers * 2 * self.block_size * (a.num_kv_heads // self.tp.size) * a.head_dim * elem

    def ring_bytes(self) -> int:
        """Bytes of the streaming heads' rings (0 unless streaming_kv='ring'); independent of max_model_len."""
        return self.attn.ring_bytes(self.arch.num_layers) if self.ring else 0

    def blocks_for_budget(self, budget: float) -> int:
        """Paged-cache blocks that `budget` bytes of KV memory give, after the rings (ring mode)."""
        return int((budget - self.ring_bytes()) // self.block_bytes())

    @property
    def scratch_ring_slot(self) -> int | None:
        """The ring slot of padded rows and start-up passes (ring mode), else None."""
        return self.config.max_num_seqs if self.ring else None

    def _allocate_kv(self, num_blocks: int) -> None:
        a = self.arch
        if self.ring:  # per-layer caches of the retrieval heads + rings; no single (L, 2, ...) tensor
            self.kv = None
            layers = [self.attn.allocate_layer(i, num_blocks + 1, self.block_size, self.device) for i in range(a.num_layers)]
            self.kv_caches = [(k, v) for k, v, _ in layers]
            self.states = [st for _, _, st in layers]
            return
        # (layers, 2, num_blocks + 1 scratch, B, Hkv_local, d): the last block takes padded writes
        self.kv = torch.zeros(a.num_layers, 2, num_blocks + 1, self.block_size, a.num_kv_heads // self.tp.size, a.head_dim,
                              dtype=self.kv_dtype, device=self.device)
        self.kv_caches = [(self.kv[i, 0], self.kv[i, 1]) for i in range(a.num_layers)]
        self.states = [self.attn.allocate_layer_state(num_blocks + 1, self.block_size, self.device) for _ in range(a.num_layers)]

    def _decide_num_blocks(self) -> int:
        c = self.config
        if c.kv_cache_blocks is not None:
            n = c.kv_cache_blocks
        elif c.device == "cpu":
            n = CPU_KV_BLOCKS
        else:
            n = self._blocks_from_free_memory()
        if self.tp.size > 1:  # every rank must agree on the pool size
            t = torch.tensor([n], device=self.device if c.device == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            n = int(t.item())
        return n

    @torch.inference_mode()
    def _blocks_from_free_memory(self) -> int:
        """Run the largest prefill once with a throw-away cache, then give the KV cache what the
        memory budget leaves after weights and that peak."""
        T = min(self.config.max_num_batched_tokens, self.max_model_len)
        nb = (T + self.block_size - 1) // self.block_size
        self._allocate_kv(nb)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        inp = StepInputs(
            input_ids=torch.zeros(T, dtype=torch.int64), positions=torch.arange(T), slot_mapping=torch.arange(T),
            num_prefill_tokens=T, num_decode_tokens=0, cu_seqlens_q=[0, T], cu_seqlens_k=[0, T],
            prefill_block_tables=torch.arange(nb, dtype=torch.int32)[None], decode_block_tables=None,
            decode_context_lens=None, logits_indices=torch.tensor([T - 1]), overrides=[None],
            seq_slots=self._scratch_slots())
        self.forward(inp)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del self.kv, self.kv_caches, self.states
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        # logits + sampler scratch for a full decode batch, and CUDA-graph pools
        reserve = 4 * self.config.max_num_seqs * self.arch.vocab_size * 4 + (512 << 20)
        budget = free - (1 - self.config.gpu_memory_utilization) * total - peak - reserve
        n = self.blocks_for_budget(budget)
        if n < 2:
            raise ValueError(f"not enough GPU memory for the KV cache: {free / 2**30:.1f} GiB free, "
                             f"{peak / 2**30:.1f} GiB prefill peak, {self.ring_bytes() / 2**30:.1f} GiB of rings, "
                f"{self.block_bytes()} bytes per block")
        return n

    def _scratch_slots(self) -> torch.Tensor | None:  # start-up passes write the scratch ring slot
        return None if not self.ring else torch.tensor([self.scratch_ring_slot], dtype=torch.int32)

    @torch.inference_mode()
    def _calibrate_fp8(self) -> None:
        """Set the per-head FP8 scales from one prefill of a fixed pseudo-random prompt."""
        T = min(256, self.max_model_len, self.num_blocks * self.block_size)
        nb = (T + self.block_size - 1) // self.block_size
        g = torch.Generator().manual_seed(1234)
        inp = StepInputs(
            input_ids=torch.randint(0, self.arch.vocab_size, (T,), generator=g), positions=torch.arange(T),
            slot_mapping=torch.arange(T), num_prefill_tokens=T, num_decode_tokens=0, cu_seqlens_q=[0, T],
            cu_seqlens_k=[0, T], prefill_block_tables=torch.arange(nb, dtype=torch.int32)[None],
            decode_block_tables=None, decode_context_lens=None, logits_indices=torch.tensor([T - 1]), overrides=[None],
            seq_slots=self._scratch_slots())
        self.forward(inp)
