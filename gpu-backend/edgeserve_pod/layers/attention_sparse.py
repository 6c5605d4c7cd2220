"""Sparse attention backend: Quest decode for retrieval heads, sink + window for streaming heads
(DuoAttention / StreamingLLM), LServe-style block-sparse prefill. Same KV layout as every
backend (attention_base.py), so block manager, prefix cache and KV transfer are unchanged.

Decode, one launch for all heads: retrieval kv heads get Quest's top pages within the token
budget (kernels/quest.py), streaming kv heads get the sink pages + the pages of the last
`window` tokens (page-granular: at most one page more on each side), and the split-K decode
kernel visits only those pages. Contexts within the budget are attended densely (Quest keeps
every page).
Quest re-selection every k steps (LServe; `reselect_every`, per model or per request): a
sequence reuses its page list for k decode steps and selects again on the k-th, or at once when
it starts a new last page (see _quest_reusing). k = 1 selects every step.
Prefill without a cached prefix: block_sparse_prefill (retrieval heads dense causal, streaming
heads sink + local blocks). With a cached prefix (prefix-cache hit, or a later chunk of a
chunked prefill), both paths give the streaming heads the rows of the full prompt's block-sparse
mask at their absolute positions, so the result equals a one-shot prefill: Triton runs the paged
prefill with head kinds and a StreamingMask (streaming heads visit only the sink and window key
tiles of the paged cache), the torch path masks a dense pass. Sparse off: dense paged prefill.
A batch whose prefilling sequences carry different (sparse, sink, window) settings runs each
stretch of consecutive sequences with equal settings as its own prefill (its own plan; one
launch per stretch), so a sequence's result does not depend on its neighbours' overrides.

Two implementations of the same selection: "triton" (the kernels; GPU, or CPU under
TRITON_INTERPRET=1 in the kernel tests) and "torch" (masks over the same page lists and block
plans, float32 on CPU), so the CPU engine can serve attention_backend="sparse" too (the
passkey accuracy bench runs through it).

Constant-size streaming KV: in this backend (EngineConfig.streaming_kv="full") streaming heads
have their K/V written for every token (the shared paged layout keeps all heads in one block),
so their KV is constant-size only in what each step reads. streaming_kv="ring" is the sibling
backend attention_sparse_ring.py (a subclass of this one): the paged cache holds only each
layer's retrieval heads and streaming heads live in a per-sequence ring of sink + window + one
chunk, read through a virtual block table by the same kernels. It gives up prefix caching, KV
transfer, tensor parallelism and requests with sparse=false or a larger sink/window (see there).
8B shape (32 layers, 8 kv heads, d 128, bf16), 50% streaming: 128 KiB -> 64 KiB of paged KV per
token, plus one ring per running sequence ((sink + window + chunk) * 64 KiB, with some slack).

Per-request overrides (protocol `attention`: sparse, token_budget, sink_tokens, window_tokens,
and reselect_every here) come in meta.overrides, prefill sequences first, then decodes; they
were checked when the request was admitted (AttentionBackend.check_request_overrides), with the
bounds of attention_base.OVERRIDE_INT_BOUNDS, which SparseAttentionConfig also enforces.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..kernels.block_sparse_prefill import BlockSparsePlan, block_sparse_prefill, plan_block_sparse, plan_mask
from ..kernels.paged_attention import FP8, StreamingMask, paged_decode, paged_prefill
from ..kernels.quest import quest_scores, rebuild_page_minmax, select_pages, torch_quest_scores, update_page_minmax
from ..kernels.sparse_kv_write import write_kv_minmax_decode
from .attention_base import OVERRIDE_INT_BOUNDS, AttentionBackend, AttentionMetadata, check_attention_overrides
from .attention_torch import TorchAttention
from .kv_write import dequantize, write_kv

RESELECT_ROWS = 256  # decode batch rows that can keep a Quest selection between steps
# prefill plans / torch masks kept per (length bucket, sink, window): least recently used go first
# (a 128K-bucket plan is ~16 MiB; requests choose sink and window, so the keys are unbounded)
PLAN_CACHE_ENTRIES = 8


@dataclass
class SparseAttentionConfig:
    """Per-model sparse-attention settings; requests may override the first four and reselect_every."""

    enabled: bool = True
    token_budget: int = 4096  # Quest: tokens of KV each retrieval kv head reads per decode step
    sink_tokens: int = 128  # streaming heads: first tokens always kept
    window_tokens: int = 4096  # streaming heads: most recent tokens kept
    # Quest re-scores every k-th decode step of a sequence and reuses its page list in between
    # (LServe); a new last page always triggers a fresh selection. 1 = every step.
    reselect_every: int = 1
    # decode of layers < dense_layers reads every page for retrieval heads (Quest leaves its
    # first two layers dense: their attention is spread out, so the bound picks poorly there)
    dense_layers: int = 0
    # dense_heads[layer][kv_head] = True: a retrieval head that Quest leaves alone (reads every
    # page), for heads whose attention the page bound ranks poorly (calibrate_heads' needle mass)
    dense_heads: list[list[bool]] | None = None
    # streaming[layer][kv_head] = True for a streaming head (tools/calibrate_heads.py writes it);
    # None = every head is a retrieval head.
    streaming: list[list[bool]] | None = None
    prefill_block_m: int = 128
    prefill_block_n: int = 64

    def __post_init__(self) -> None:
        for name in ("prefill_block_m", "prefill_block_n", "dense_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled must be a boolean, got {self.enabled!r}")
        for name, (lo, hi) in OVERRIDE_INT_BOUNDS.items():  # the bounds a request's overrides have
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        for name in ("streaming", "dense_heads"):
            m = getattr(self, name)
            if m is not None and not all(isinstance(r, list) and all(isinstance(x, bool) for x in r) for r in m):
                raise ValueError(f"{name} must be a list (per layer) of lists (per kv head) of booleans")

    @classmethod
    def from_head_map(cls, path: str, **overrides) -> "SparseAttentionConfig":
        """Load the JSON written by tools/calibrate_heads.py (its sink/window, and token_budget when
        present, become this model's defaults)."""
        with open(path) as f:
            m = json.load(f)
        if "streaming" not in m:
            raise ValueError(f"{path} is not a head map: no 'streaming' field")
        kw = {"streaming": m["streaming"], "sink_tokens": m.get("sink_tokens", 128),
              "window_tokens": m.get("window_tokens", 4096)}
        kw.update({k: m[k] for k in ("token_budget", "reselect_every", "dense_layers", "dense_heads", "prefill_block_m",
                                     "prefill_block_n") if k in m})
        kw.update(overrides)
        return cls(**kw)

    def for_request(self, o: dict | None) -> tuple[bool, int, int, int, int]:
        """(sparse, token_budget, sink, window, reselect_every) for one sequence; overrides are
        checked (attention_base.check_attention_overrides), OverrideError if bad."""
        o = check_attention_overrides(o)
        if not o:
            return self.enabled, self.token_budget, self.sink_tokens, self.window_tokens, self.reselect_every
        return (o.get("sparse", self.enabled), o.get("token_budget", self.token_budget),
                o.get("sink_tokens", self.sink_tokens), o.get("window_tokens", self.window_tokens),
                o.get("reselect_every", self.reselect_every))


class SparseAttention(AttentionBackend):
    name = "sparse"
    uses_request_overrides = True

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None,
                 kv_dtype: torch.dtype | None = None, config: SparseAttentionConfig | None = None,
                 minmax_dtype: torch.dtype | None = None, impl: str = "auto", num_layers: int | None = None):
        super().__init__(num_heads, num_kv_heads, head_dim, scale)
        # "triton": the kernels (GPU, or CPU under TRITON_INTERPRET=1); "torch": the same
        # selection with torch attention (the CPU engine path); "auto": triton on cuda tensors.
        if impl not in ("auto", "triton", "torch"):
            raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
        self.impl = impl
        self.kv_dtype = kv_dtype
        self.cfg = config or SparseAttentionConfig()
        for name in ("streaming", "dense_heads"):
            rows = getattr(self.cfg, name)
            if rows is None:
                continue
            if any(len(r) != num_kv_heads for r in rows):
                raise ValueError(f"head map rows must have {num_kv_heads} kv heads each")
            # num_layers: the model's, given by the model runner (a map for another model fails here,
            # at start-up, not with an IndexError in the first step)
            if num_layers is not None and len(rows) != num_layers:
                raise ValueError(f"head map {name} has {len(rows)} layer rows; this model has {num_layers} layers")
        # min/max of keys are element selections: exact in the keys' own float dtype (bf16 keys
        # need no more than bf16); an fp8 cache still gets its keys before quantisation.
        self.minmax_dtype = minmax_dtype or (kv_dtype if kv_dtype in (torch.float32, torch.float16, torch.bfloat16)
                                             else torch.bfloat16)
        self._dense = TorchAttention(num_heads, num_kv_heads, head_dim, self.scale)  # torch impl's dense parts
        self._dense_rows: dict[tuple[int, str], torch.Tensor] = {}
        self._masks: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()  # LRU, PLAN_CACHE_ENTRIES
        self._plans: OrderedDict[tuple[int, int, int], BlockSparsePlan] = OrderedDict()
        self._stream: dict[tuple[int, str], torch.Tensor] = {}
        self._q_kind: dict[tuple[int, str], torch.Tensor] = {}
        self.fp8_scales_ready = False  # set by the model runner after its fp8 calibration

    def allocate_layer_state(self, num_blocks: int, block_size: int, device: torch.device,
                             num_kv_heads: int | None = None) -> dict[str, torch.Tensor]:
        """num_kv_heads: the heads the paged cache holds (the ring backend: the layer's retrieval heads)."""
        hkv = self.num_kv_heads if num_kv_heads is None else num_kv_heads
        state = {"kmin": torch.zeros(num_blocks, hkv, self.head_dim, dtype=self.minmax_dtype, device=device),
                 "kmax": torch.zeros(num_blocks, hkv, self.head_dim, dtype=self.minmax_dtype, device=device)}
        # Quest re-selection every k steps: a generation per block (+1 when its row 0 is written)
        # and the kept page lists of up to RESELECT_ROWS decode rows (allocated here, before any
        # CUDA-graph capture, so that replays keep them)
        z = dict(dtype=torch.int32, device=device)
        K = max(2, self.cfg.token_budget // block_size)
        state.update(blk_gen=torch.zeros(num_blocks, **z), sel_idx=torch.zeros(RESELECT_ROWS, hkv, K, **z),
                     sel_num=torch.zeros(RESELECT_ROWS, hkv, **z), sel_blk=torch.full((RESELECT_ROWS,), -1, **z),
                     sel_gen=torch.zeros(RESELECT_ROWS, **z), sel_ctx=torch.zeros(RESELECT_ROWS, **z))
        if self.kv_dtype == FP8:
            state["k_scale"] = torch.zeros(hkv, dtype=torch.float32, device=device)
            state["v_scale"] = torch.zeros(hkv, dtype=torch.float32, device=device)
        return state

    def streaming_kv_heads(self, layer: int, device) -> torch.Tensor:  # (Hkv,) bool
        key = (layer, str(device))
        if key not in self._stream:
            row = self.cfg.streaming[layer] if self.cfg.streaming is not None else [False] * self.num_kv_heads
            self._stream[key] = torch.tensor(row, dtype=torch.bool, device=device)
        return self._stream[key]

    def _triton(self, q: torch.Tensor) -> bool:
        return self.impl == "triton" or (self.impl == "auto" and q.is_cuda)

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        # q (T, Hq, D); k, v (T, Hkv, D); caches (num_blocks, BS, Hkv, D)
        ks, vs = layer_state.get("k_scale"), layer_state.get("v_scale")
        if meta.num_prefill_tokens == 0 and self._triton(q) and (ks is None or self.fp8_scales_ready):
            # decode: one token per block, so one kernel does the write, the min/max and the generation
            # (fp8: once the runner's calibration has fixed the scales)
            write_kv_minmax_decode(k, v, k_cache, v_cache, meta.slot_mapping, layer_state["kmin"], layer_state["kmax"],
                                   layer_state.get("blk_gen"), ks, vs)
        else:
            write_kv(k, v, k_cache, v_cache, meta.slot_mapping, ks, vs)
            update_page_minmax(k, meta.slot_mapping, layer_state["kmin"], layer_state["kmax"], k_cache.shape[1])
            if "blk_gen" in layer_state:  # a (re)started block invalidates Quest selections kept for it
                BS = k_cache.shape[1]
                layer_state["blk_gen"].index_add_(0, meta.slot_mapping // BS, (meta.slot_mapping % BS == 0).to(torch.int32))
        out = torch.empty_like(q)
        n_p = meta.num_prefill_tokens
        n_seq_p = 0 if meta.cu_seqlens_q is None else meta.cu_seqlens_q.numel() - 1
        # all-default steps build no per-request tensors from Python lists (keeps decode graph-capturable)
        # the same for every layer: resolved (and re-checked) once per step
        reqs = meta.__dict__.get("_sparse_reqs")
        if reqs is None:
            reqs = meta.__dict__["_sparse_reqs"] = ([self.cfg.for_request(o) for o in meta.overrides]
                                                   if any(meta.overrides) else [])
        if n_p:
            self._prefill(layer, q[:n_p], k[:n_p], v[:n_p], k_cache, v_cache, ks, vs, meta, reqs[:n_seq_p], out[:n_p])
        if meta.num_decode_tokens:
            self._decode(layer, q[n_p:], k_cache, v_cache, ks, vs, layer_state, meta, reqs[n_seq_p:], out[n_p:])
        return out

    # ---------------------------------------------------------------------------- prefill
    def _plan(self, max_len: int, sink: int, window: int, device) -> BlockSparsePlan:
        length = 1 << max(7, (max_len - 1).bit_length())  # bucket: plans are reused across steps
        return _lru(self._plans, (length, sink, window), lambda: plan_block_sparse(
            length, sink, window, self.cfg.prefill_block_m, self.cfg.prefill_block_n, device=device))

    def _prefill(self, layer, q, k, v, k_cache, v_cache, ks, vs, meta, reqs, out, state=None):
        """Prefill sequences that share (sparse, sink, window) run together; a batch that mixes
        settings runs each stretch of consecutive sequences with equal settings on its own (its
        own plan), so one sequence's overrides never change another's attention."""
        keys = [(r[0], r[2], r[3]) if r[0] else (False, 0, 0) for r in reqs]  # sparse off: any sink/window
        if len(set(keys)) <= 1:
            on, sink, window = keys[0] if keys else (self.cfg.enabled, self.cfg.sink_tokens, self.cfg.window_tokens)
            self._prefill_group(layer, q, k, v, k_cache, v_cache, ks, vs, meta, on, sink, window, out, state)
            return
        cu_q = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else meta.cu_seqlens_q.tolist()
        cu_k = meta.cu_seqlens_k_cpu if meta.cu_seqlens_k_cpu is not None else meta.cu_seqlens_k.tolist()
        i = 0
        while i < len(keys):
            j = i + 1
            while j < len(keys) and keys[j] == keys[i]:
                j += 1
            a, b = cu_q[i], cu_q[j]
            sub_q, sub_k = [c - a for c in cu_q[i:j + 1]], [c - cu_k[i] for c in cu_k[i:j + 1]]
            dev = meta.cu_seqlens_q.device
            sub = AttentionMetadata(
                b - a, 0, meta.slot_mapping[a:b],
                cu_seqlens_q=torch.tensor(sub_q, dtype=torch.int32, device=dev),
                cu_seqlens_k=torch.tensor(sub_k, dtype=torch.int32, device=dev),
                max_seqlen_q=max(y - x for x, y in zip(sub_q, sub_q[1:])),
                max_seqlen_k=max(y - x for x, y in zip(sub_k, sub_k[1:])),
                prefill_block_tables=meta.prefill_block_tables[i:j], cu_seqlens_q_cpu=sub_q, cu_seqlens_k_cpu=sub_k,
                seq_slots=None if meta.seq_slots is None else meta.seq_slots[i:j])
            self._prefill_group(layer, q[a:b], k[a:b], v[a:b], k_cache, v_cache, ks, vs, sub, *keys[i], out[a:b], state)
            i = j

    def _prefill_group(self, layer, q, k, v, k_cache, v_cache, ks, vs, meta, on, sink, window, out, state=None):
        """Prefill sequences that share one setting (sparse on/off, sink, window). state: the
        layer's state (the ring backend's override reads its ring there)."""
        cu_q, cu_k = meta.cu_seqlens_q, meta.cu_seqlens_k
        if meta.cu_seqlens_q_cpu is not None and meta.cu_seqlens_k_cpu is not None:
            no_prefix = meta.cu_seqlens_q_cpu == meta.cu_seqlens_k_cpu
        else:
            no_prefix = torch.equal(cu_q, cu_k)  # host sync: prefill is not graph-captured
        if not on:  # sparse off: dense paged
            if self._triton(q):
                paged_prefill(q, k_cache, v_cache, meta.prefill_block_tables, cu_q, cu_k, meta.max_seqlen_q,
                              self.scale, ks, vs, out=out)
            else:
                out.copy_(self._dense._prefill(q, k_cache, v_cache, ks, vs, meta))
            return
        if not no_prefix:
            if not self._triton(q):
                self._torch_prefix_prefill(layer, q, k_cache, v_cache, ks, vs, meta, sink, window, out)
                return
            kind = self._q_head_kind(layer, q.device)  # None: no streaming head in this layer
            mask = StreamingMask(sink, window, self.cfg.prefill_block_m, self.cfg.prefill_block_n)
            paged_prefill(q, k_cache, v_cache, meta.prefill_block_tables, cu_q, cu_k, meta.max_seqlen_q,
                          self.scale, ks, vs, out=out, head_kind=kind, streaming=mask if kind is not None else None)
            return
        plan = self._plan(meta.max_seqlen_q, sink, window, q.device)
        if not self._triton(q):
            cu = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else cu_q.tolist()
            self._torch_block_sparse(q, k, v, cu, self.streaming_kv_heads(layer, q.device), plan, (sink, window), out)
            return
        head_kind = self.streaming_kv_heads(layer, q.device).repeat_interleave(self.num_heads // self.num_kv_heads)
        block_sparse_prefill(q, k, v, cu_q, meta.max_seqlen_q, head_kind.to(torch.int32), plan, self.scale, out=out)

    def _q_head_kind(self, layer: int, device) -> torch.Tensor | None:  # (Hq,) int32 1 = streaming, or None
        if self.cfg.streaming is None or not any(self.cfg.streaming[layer]):
            return None  # no streaming head in this layer: the dense paged prefill
        key = (layer, str(device))
        if key not in self._q_kind:
            g = self.num_heads // self.num_kv_heads
            self._q_kind[key] = self.streaming_kv_heads(layer, device).repeat_interleave(g).to(torch.int32)
        return self._q_kind[key]

    # ----------------------------------------------------------------------------- decode
    def _decode(self, layer, q, k_cache, v_cache, ks, vs, layer_state, meta, reqs, out, heads=None):
        """heads: the kv heads of this layer that k_cache holds, in order (None: all); the ring
        backend passes its retrieval heads, so none of them is streaming here."""
        ctx, tables = meta.decode_context_lens, meta.decode_block_tables  # (n,), (n, max_blocks)
        BS, n_kv = k_cache.shape[1], k_cache.shape[2]
        tri = self._triton(q)
        if not reqs and not self.cfg.enabled:
            if tri:
                paged_decode(q, k_cache, v_cache, tables, ctx, self.scale, ks, vs, out=out)
            else:
                out.copy_(self._dense._decode(q, k_cache, v_cache, ks, vs, tables, ctx))
            return
        step = meta.__dict__.get("_sparse_step")
        if step is None:  # the same for every layer: computed once per step (one set of kernels)
            step = meta.__dict__["_sparse_step"] = self._step_pages(ctx, tables, BS, reqs, q.device)
        budget, max_budget, idx_s, num_s, every, last_blk = step
        if heads is None:
            stream_row = self.streaming_kv_heads(layer, q.device)
            n_stream = int(sum(self.cfg.streaming[layer])) if self.cfg.streaming is not None else 0
        else:
            stream_row, n_stream = None, 0
        if n_stream == n_kv:  # all streaming: no Quest work in this layer
            page_idx = idx_s[:, None, :].expand(-1, n_kv, -1).contiguous()
            num_sel = num_s[:, None].expand(-1, n_kv).contiguous()
        else:
            # retrieval heads: Quest (a non-sparse request asks for every page)
            K = max(2, min(max_budget // BS, tables.shape[1]))  # select_pages' width
            if layer < self.cfg.dense_layers:  # Quest leaves the first layers dense (their attention is not sparse)
                if not n_stream:
                    if tri:
                        paged_decode(q, k_cache, v_cache, tables, ctx, self.scale, ks, vs, out=out)
                    else:
                        out.copy_(self._dense._decode(q, k_cache, v_cache, ks, vs, tables, ctx))
                    return
                W = tables.shape[1]
                page_idx = torch.arange(W, dtype=torch.int32, device=q.device)[None, None, :].expand(
                    ctx.shape[0], n_kv, W)
                num_sel = ((ctx + BS - 1) // BS).to(torch.int32)[:, None].expand(-1, n_kv)
            elif every is not None and ctx.shape[0] <= RESELECT_ROWS and K == layer_state["sel_idx"].shape[2]:
                page_idx, num_sel = self._quest_reusing(q, tables, ctx, BS, layer_state, budget, max_budget,
                                                        every, last_blk, tri, meta)
            else:  # select every step (also when the kept lists' width does not fit this step's)
                scores = (quest_scores if tri else torch_quest_scores)(q, layer_state["kmin"], layer_state["kmax"],
                                                                       tables, ctx, BS)
                page_idx, num_sel = select_pages(scores, ctx, max_budget, BS, method="triton" if tri else "torch",
                                                 budget_per_seq=budget)  # (n, Hkv, Kq)
            dense_row = self.cfg.dense_heads[layer] if self.cfg.dense_heads is not None else None
            if dense_row is not None and heads is not None:
                dense_row = [dense_row[h] for h in heads]
            if dense_row is not None and any(dense_row) and layer >= self.cfg.dense_layers:
                W = tables.shape[1]
                width = max(page_idx.shape[2], W)
                every_page = torch.arange(W, dtype=torch.int32, device=q.device)[None, None, :].expand(
                    ctx.shape[0], n_kv, W)
                key = (layer, str(q.device), heads is not None)
                d = self._dense_rows.get(key)
                if d is None:  # built once, before any CUDA-graph capture replays this step
                    d = self._dense_rows[key] = torch.tensor(dense_row, device=q.device)
                page_idx = torch.where(d[None, :, None], _pad(every_page, width), _pad(page_idx, width))
                num_sel = torch.where(d[None, :], ((ctx + BS - 1) // BS).to(torch.int32)[:, None], num_sel)
            if n_stream:
                width = max(page_idx.shape[2], idx_s.shape[1])
                stream = stream_row[None, :, None]  # (1, Hkv, 1)
                page_idx = torch.where(stream, _pad(idx_s[:, None, :], width), _pad(page_idx, width)).contiguous()
                num_sel = torch.where(stream[..., 0], num_s[:, None], num_sel).to(torch.int32).contiguous()
        if tri:
            paged_decode(q, k_cache, v_cache, tables, ctx, self.scale, ks, vs, page_idx=page_idx, num_sel=num_sel,
                         out=out)
        else:
            out.copy_(self._torch_decode(q, k_cache, v_cache, ks, vs, tables, ctx, page_idx, num_sel))

    def _quest_reusing(self, q, tables, ctx, BS, state, budget, max_budget, every, last_blk, tri, meta):
        """Quest with LServe's re-selection every k steps. Decode row b keeps its page list while
        it still writes into the same last block (same physical block, same generation: the block
        was not freed and reused since) and fewer than every[b] tokens were added since that list
        was chosen; other rows are scored and selected afresh (Triton: the kernels skip the kept
        rows). The lists live in per-layer buffers of RESELECT_ROWS decode rows, so a sequence
        that changes its row in the batch simply selects again.
        The keep-or-select decision is made once per step, by the first layer that gets here, with
        that layer's (block, generation, context) record: every layer writes the same slots and
        reaches this point on the same steps, so each layer's record would be the same. (Deciding
        in every layer cost ~15 small kernels per layer, more than the skipped scoring saved.)"""
        n = ctx.shape[0]
        reuse = meta.__dict__.get("_quest_reuse")
        if reuse is None:
            gen = state["blk_gen"][last_blk.long()]
            old_blk, old_gen, old_ctx = state["sel_blk"][:n], state["sel_gen"][:n], state["sel_ctx"][:n]
            reuse = (old_blk == last_blk) & (old_gen == gen) & (ctx > old_ctx) & (ctx - old_ctx < every)
            old_blk.copy_(torch.where(reuse, old_blk, last_blk))
            old_gen.copy_(torch.where(reuse, old_gen, gen))
            old_ctx.copy_(torch.where(reuse, old_ctx, ctx))
            meta.__dict__["_quest_reuse"] = reuse
        idx, num = state["sel_idx"][:n], state["sel_num"][:n]
        if tri:
            scores = quest_scores(q, state["kmin"], state["kmax"], tables, ctx, BS, skip=reuse)
            select_pages(scores, ctx, max_budget, BS, budget_per_seq=budget, skip=reuse, out=(idx, num))
        else:
            scores = torch_quest_scores(q, state["kmin"], state["kmax"], tables, ctx, BS)
            f_idx, f_num = select_pages(scores, ctx, max_budget, BS, method="torch", budget_per_seq=budget)
            idx.copy_(torch.where(reuse[:, None, None], idx, f_idx))
            num.copy_(torch.where(reuse[:, None], num, f_num))
        return idx, num

    # ------------------------------------------------------------------ torch implementation
    def _torch_block_sparse(self, q, k, v, cu: list[int], stream_kv, plan, key, out):
        """block_sparse_prefill in torch: every head dense causal, then the streaming heads again
        under the plan's element mask (plan_mask: the block lists the kernel walks)."""
        g = self.num_heads // self.num_kv_heads
        heads = stream_kv.repeat_interleave(g).nonzero()[:, 0]  # streaming q heads
        for a, b in zip(cu[:-1], cu[1:]):
            qi, ki, vi = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))  # (1, H, L, D)
            o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=self.scale, enable_gqa=True)[0]
            if heads.numel():
                L = b - a
                mask = self._stream_mask(plan, key)[:L, :L]
                ks_, vs_ = ki[:, heads // g], vi[:, heads // g]
                for r in range(0, L, 1024):  # row chunks bound the (heads, rows, L) scores
                    o[heads, r:r + 1024] = F.scaled_dot_product_attention(
                        qi[:, heads, r:r + 1024], ks_, vs_, attn_mask=mask[r:r + 1024], scale=self.scale)[0]
            out[a:b] = o.transpose(0, 1)

    def _torch_prefix_prefill(self, layer, q, k_cache, v_cache, ks, vs, meta, sink, window, out):
        """Prefill after a cached prefix, torch path: dense paged for all heads, then the
        streaming heads again under the rows of the full-prompt block-sparse mask that these
        queries' positions have (the same attention as prefilling the whole prompt at once)."""
        out.copy_(self._dense._prefill(q, k_cache, v_cache, ks, vs, meta))
        g = self.num_heads // self.num_kv_heads
        heads = self.streaming_kv_heads(layer, q.device).repeat_interleave(g).nonzero()[:, 0]
        if not heads.numel():
            return
        BS = k_cache.shape[1]
        cu_q = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else meta.cu_seqlens_q.tolist()
        cu_k = meta.cu_seqlens_k_cpu if meta.cu_seqlens_k_cpu is not None else meta.cu_seqlens_k.tolist()
        plan = self._plan(max(cu_k[i + 1] - cu_k[i] for i in range(len(cu_k) - 1)), sink, window, q.device)
        full = self._stream_mask(plan, (sink, window))
        for i in range(len(cu_q) - 1):
            a, b = cu_q[i], cu_q[i + 1]
            lq, lk = b - a, cu_k[i + 1] - cu_k[i]
            blocks = meta.prefill_block_tables[i, :(lk + BS - 1) // BS].long()
            kk = dequantize(k_cache[blocks].flatten(0, 1)[:lk], ks, q.dtype)[:, heads // g].transpose(0, 1)[None]
            vv = dequantize(v_cache[blocks].flatten(0, 1)[:lk], vs, q.dtype)[:, heads // g].transpose(0, 1)[None]
            qi = q[a:b, heads].transpose(0, 1)[None]  # (1, hs, lq, D)
            mask = full[lk - lq:lk, :lk]
            for r in range(0, lq, 1024):
                o = F.scaled_dot_product_attention(qi[:, :, r:r + 1024], kk, vv, attn_mask=mask[r:r + 1024], scale=self.scale)
                out[a + r:a + r + o.shape[2], heads] = o[0].transpose(0, 1)

    def _stream_mask(self, plan, key) -> torch.Tensor:
        return _lru(self._masks, (plan.max_len, *key),
                    lambda: plan_mask(plan, 1, plan.max_len).to(plan.block_idx.device))

    def _torch_decode(self, q, k_cache, v_cache, ks, vs, tables, ctx, page_idx, num_sel):
        """paged_decode over a page list in torch: keys outside the selected pages are masked."""
        n, W = tables.shape
        BS, Hkv = k_cache.shape[1], k_cache.shape[2]  # the heads of q and k_cache (a ring call passes a subset)
        g = q.shape[1] // Hkv
        valid = torch.arange(page_idx.shape[2], device=q.device)[None, None, :] < num_sel[..., None]
        keep = torch.zeros(n, Hkv, W + 1, dtype=torch.bool, device=q.device)
        keep.scatter_(2, torch.where(valid, page_idx.long(), W), True)  # unused entries go to column W
        tok = keep[..., :W].repeat_interleave(BS, 2) & (torch.arange(W * BS, device=q.device) < ctx[:, None, None])
        bt = tables.long()
        kk = dequantize(k_cache[bt].flatten(1, 2), ks, q.dtype).transpose(1, 2)  # (n, Hkv, W*BS, D)
        vv = dequantize(v_cache[bt].flatten(1, 2), vs, q.dtype).transpose(1, 2)
        o = F.scaled_dot_product_attention(q.unsqueeze(2), kk, vv, attn_mask=tok.repeat_interleave(g, 1)[:, :, None, :],
                                           scale=self.scale, enable_gqa=True)
        return o.squeeze(2)

    def _step_pages(self, ctx, tables, BS: int, reqs, dev):
        """Per-sequence Quest budgets and the streaming heads' page lists (sink pages, then the
        window's pages): budget (n,) int32, max_budget int, idx_s (n, Ks) int32, num_s (n,) int32,
        every (n,) int32 re-selection periods or None (all 1), last_blk (n,) int32 physical block
        of each sequence's last page."""
        n, max_pages = tables.shape
        every = None
        if reqs and max(r[4] for r in reqs) > 1:
            every = torch.tensor([r[4] for r in reqs], dtype=torch.int32, device=dev)
        elif not reqs and self.cfg.reselect_every > 1:
            every = torch.full((n,), self.cfg.reselect_every, dtype=torch.int32, device=dev)
        if reqs:
            sparse = torch.tensor([r[0] for r in reqs], device=dev)
            budget = torch.tensor([r[1] if r[0] else max_pages * BS for r in reqs], dtype=torch.int32, device=dev)
            sink = torch.tensor([r[2] for r in reqs], dtype=torch.int32, device=dev)[:, None]
            window = torch.tensor([r[3] for r in reqs], dtype=torch.int32, device=dev)[:, None]
            max_budget = max(r[1] if r[0] else max_pages * BS for r in reqs)
            ks_width = max(-(-r[2] // BS) + -(-r[3] // BS) + 1 if r[0] else max_pages for r in reqs)
        else:
            sparse = None
            budget = torch.full((n,), self.cfg.token_budget, dtype=torch.int32, device=dev)
            sink = torch.full((n, 1), self.cfg.sink_tokens, dtype=torch.int32, device=dev)
            window = torch.full((n, 1), self.cfg.window_tokens, dtype=torch.int32, device=dev)
            max_budget = self.cfg.token_budget
            ks_width = -(-self.cfg.sink_tokens // BS) + -(-self.cfg.window_tokens // BS) + 1
        ks_width = max(2, min(ks_width, max_pages))
        n_pages = ((ctx + BS - 1) // BS)[:, None]  # (n, 1)
        sink_p = torch.minimum((sink + BS - 1) // BS, n_pages)
        win_first = torch.maximum(torch.clamp(ctx[:, None] - window, min=0) // BS, sink_p)
        j = torch.arange(ks_width, device=dev)[None, :]  # (1, Ks)
        idx_s = torch.where(j < sink_p, j, win_first + j - sink_p)
        num_s = sink_p + n_pages - win_first  # (n, 1)
        if sparse is not None:  # a dense request: pages 0 .. n_pages - 1
            idx_s = torch.where(sparse[:, None], idx_s, j)
            num_s = torch.where(sparse[:, None], num_s, n_pages)
        last_blk = tables.gather(1, (n_pages - 1).clamp(min=0).to(torch.int64))[:, 0]
        return budget, max_budget, idx_s.to(torch.int32), num_s[:, 0].to(torch.int32), every, last_blk


    def rebuild_block_state(self, layer, k_cache, v_cache, layer_state, blocks) -> None:
        """Imported blocks: Quest's page min/max from their keys, and a new generation, so that a
        kept page list that named them is selected afresh."""
        rebuild_page_minmax(k_cache, blocks, layer_state["kmin"], layer_state["kmax"], layer_state.get("k_scale"))
        layer_state["blk_gen"][blocks] += 1


def _lru(cache: OrderedDict, key, make):
    """cache[key], made on a miss; the least recently used entry leaves past PLAN_CACHE_ENTRIES."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    if len(cache) > PLAN_CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x
