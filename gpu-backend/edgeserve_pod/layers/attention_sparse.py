"""Sparse attention backend: Quest decode for retrieval heads, sink + window for streaming heads
(DuoAttention / StreamingLLM), LServe-style block-sparse prefill. Same KV layout as every
backend (attention_base.py), so block manager, prefix cache and KV transfer are unchanged.

Decode, one launch for all heads: retrieval kv heads get Quest's top pages within the token
budget (kernels/quest.py), streaming kv heads get the sink pages + the pages of the last
`window` tokens (page-granular: at most one page more on each side), and the split-K decode
kernel visits only those pages. Contexts within the budget are attended densely (Quest keeps
every page).
Prefill without a cached prefix: block_sparse_prefill (retrieval heads dense causal, streaming
heads sink + local blocks). With a cached prefix: the dense paged prefill (streaming heads then
see the whole prefix during that prefill).

What this does not do: streaming heads still have their K/V written for every token (the
shared paged layout keeps all heads in one block), so their KV is not constant-size in memory,
only in what each step reads; and Quest re-selects every step (re-selecting every k steps needs
a per-sequence slot in AttentionMetadata to keep the previous selection).

Per-request overrides (protocol `attention`: sparse, token_budget, sink_tokens, window_tokens)
come in meta.overrides, prefill sequences first, then decodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from ..kernels.block_sparse_prefill import BlockSparsePlan, block_sparse_prefill, plan_block_sparse
from ..kernels.paged_attention import FP8, paged_decode, paged_prefill
from ..kernels.quest import quest_scores, select_pages, update_page_minmax
from .attention_base import AttentionBackend, AttentionMetadata
from .kv_write import write_kv

_OVERRIDE_KEYS = {"sparse", "token_budget", "sink_tokens", "window_tokens"}


@dataclass
class SparseAttentionConfig:
    """Per-model sparse-attention settings; requests may override the first four."""

    enabled: bool = True
    token_budget: int = 4096  # Quest: tokens of KV each retrieval kv head reads per decode step
    sink_tokens: int = 128  # streaming heads: first tokens always kept
    window_tokens: int = 4096  # streaming heads: most recent tokens kept
    # streaming[layer][kv_head] = True for a streaming head (tools/calibrate_heads.py writes it);
    # None = every head is a retrieval head.
    streaming: list[list[bool]] | None = None
    prefill_block_m: int = 128
    prefill_block_n: int = 64

    def __post_init__(self) -> None:
        for name in ("token_budget", "sink_tokens", "window_tokens", "prefill_block_m", "prefill_block_n"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.token_budget < 16:
            raise ValueError(f"token_budget must be >= 16, got {self.token_budget}")
        if self.streaming is not None and not all(isinstance(r, list) and all(isinstance(x, bool) for x in r)
                                                  for r in self.streaming):
            raise ValueError("streaming must be a list (per layer) of lists (per kv head) of booleans")

    @classmethod
    def from_head_map(cls, path: str, **overrides) -> "SparseAttentionConfig":
        """Load the JSON written by tools/calibrate_heads.py (its sink/window become defaults)."""
        with open(path) as f:
            m = json.load(f)
        if "streaming" not in m:
            raise ValueError(f"{path} is not a head map: no 'streaming' field")
        kw = {"streaming": m["streaming"], "sink_tokens": m.get("sink_tokens", 128),
              "window_tokens": m.get("window_tokens", 4096)}
        kw.update(overrides)
        return cls(**kw)

    def for_request(self, o: dict | None) -> tuple[bool, int, int, int]:
        """(sparse, token_budget, sink, window) for one sequence, overrides validated."""
        if not o:
            return self.enabled, self.token_budget, self.sink_tokens, self.window_tokens
        if not isinstance(o, dict) or set(o) - _OVERRIDE_KEYS:
            raise ValueError(f"attention overrides take {sorted(_OVERRIDE_KEYS)}, got {o!r}")
        budget = o.get("token_budget", self.token_budget)
        sink = o.get("sink_tokens", self.sink_tokens)
        window = o.get("window_tokens", self.window_tokens)
        if not isinstance(budget, int) or budget < 16 or not isinstance(sink, int) or sink < 0 \
                or not isinstance(window, int) or window < 0:
            raise ValueError(f"bad attention overrides {o!r}: token_budget >= 16, sink/window >= 0 integers")
        return bool(o.get("sparse", self.enabled)), budget, sink, window


class SparseAttention(AttentionBackend):
    name = "sparse"

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None,
                 kv_dtype: torch.dtype | None = None, config: SparseAttentionConfig | None = None,
                 minmax_dtype: torch.dtype = torch.bfloat16):
        super().__init__(num_heads, num_kv_heads, head_dim, scale)
        self.kv_dtype = kv_dtype
        self.cfg = config or SparseAttentionConfig()
        if self.cfg.streaming is not None and any(len(r) != num_kv_heads for r in self.cfg.streaming):
            raise ValueError(f"head map rows must have {num_kv_heads} kv heads each")
        self.minmax_dtype = minmax_dtype
        self._plans: dict[tuple[int, int, int], BlockSparsePlan] = {}
        self._stream: dict[tuple[int, str], torch.Tensor] = {}

    def allocate_layer_state(self, num_blocks: int, block_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        state = {"kmin": torch.zeros(num_blocks, self.num_kv_heads, self.head_dim, dtype=self.minmax_dtype, device=device),
                 "kmax": torch.zeros(num_blocks, self.num_kv_heads, self.head_dim, dtype=self.minmax_dtype, device=device)}
        if self.kv_dtype == FP8:
            state["k_scale"] = torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device)
            state["v_scale"] = torch.zeros(self.num_kv_heads, dtype=torch.float32, device=device)
        return state

    def streaming_kv_heads(self, layer: int, device) -> torch.Tensor:  # (Hkv,) bool
        key = (layer, str(device))
        if key not in self._stream:
            row = self.cfg.streaming[layer] if self.cfg.streaming is not None else [False] * self.num_kv_heads
            self._stream[key] = torch.tensor(row, dtype=torch.bool, device=device)
        return self._stream[key]

    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        # q (T, Hq, D); k, v (T, Hkv, D); caches (num_blocks, BS, Hkv, D)
        ks, vs = layer_state.get("k_scale"), layer_state.get("v_scale")
        write_kv(k, v, k_cache, v_cache, meta.slot_mapping, ks, vs)
        update_page_minmax(k, meta.slot_mapping, layer_state["kmin"], layer_state["kmax"], k_cache.shape[1])
        out = torch.empty_like(q)
        n_p = meta.num_prefill_tokens
        n_seq_p = 0 if meta.cu_seqlens_q is None else meta.cu_seqlens_q.numel() - 1
        # all-default steps build no per-request tensors from Python lists (keeps decode graph-capturable)
        reqs = [self.cfg.for_request(o) for o in meta.overrides] if any(meta.overrides) else []
        if n_p:
            self._prefill(layer, q[:n_p], k[:n_p], v[:n_p], k_cache, v_cache, ks, vs, meta, reqs[:n_seq_p], out[:n_p])
        if meta.num_decode_tokens:
            self._decode(layer, q[n_p:], k_cache, v_cache, ks, vs, layer_state, meta, reqs[n_seq_p:], out[n_p:])
        return out

    # ---------------------------------------------------------------------------- prefill
    def _plan(self, max_len: int, sink: int, window: int, device) -> BlockSparsePlan:
        length = 1 << max(7, (max_len - 1).bit_length())  # bucket: plans are reused across steps
        key = (length, sink, window)
        if key not in self._plans:
            self._plans[key] = plan_block_sparse(length, sink, window, self.cfg.prefill_block_m,
                                                 self.cfg.prefill_block_n, device=device)
        return self._plans[key]

    def _prefill(self, layer, q, k, v, k_cache, v_cache, ks, vs, meta, reqs, out):
        cu_q, cu_k = meta.cu_seqlens_q, meta.cu_seqlens_k
        no_prefix = torch.equal(cu_q, cu_k)  # host sync: prefill is not graph-captured
        settings = set(reqs) if reqs else {self.cfg.for_request(None)}
        on, _, sink, window = next(iter(settings))
        if not no_prefix or len(settings) != 1 or not on:
            # cached prefixes, mixed per-request settings in one batch, or sparse off: dense paged
            paged_prefill(q, k_cache, v_cache, meta.prefill_block_tables, cu_q, cu_k, meta.max_seqlen_q,
                          self.scale, ks, vs, out=out)
            return
        plan = self._plan(meta.max_seqlen_q, sink, window, q.device)
        head_kind = self.streaming_kv_heads(layer, q.device).repeat_interleave(self.num_heads // self.num_kv_heads)
        block_sparse_prefill(q, k, v, cu_q, meta.max_seqlen_q, head_kind.to(torch.int32), plan, self.scale, out=out)

    # ----------------------------------------------------------------------------- decode
    def _decode(self, layer, q, k_cache, v_cache, ks, vs, layer_state, meta, reqs, out):
        ctx, tables = meta.decode_context_lens, meta.decode_block_tables  # (n,), (n, max_blocks)
        BS = k_cache.shape[1]
        if not reqs and not self.cfg.enabled:
            paged_decode(q, k_cache, v_cache, tables, ctx, self.scale, ks, vs, out=out)
            return
        step = meta.__dict__.get("_sparse_step")
        if step is None:  # the same for every layer: computed once per step (one set of kernels)
            step = meta.__dict__["_sparse_step"] = self._step_pages(ctx, tables.shape[1], BS, reqs, q.device)
        budget, max_budget, idx_s, num_s = step
        stream_row = self.streaming_kv_heads(layer, q.device)
        n_stream = int(sum(self.cfg.streaming[layer])) if self.cfg.streaming is not None else 0
        if n_stream == self.num_kv_heads:  # all streaming: no Quest work in this layer
            page_idx = idx_s[:, None, :].expand(-1, self.num_kv_heads, -1).contiguous()
            num_sel = num_s[:, None].expand(-1, self.num_kv_heads).contiguous()
        else:
            # retrieval heads: Quest (a non-sparse request asks for every page)
            scores = quest_scores(q, layer_state["kmin"], layer_state["kmax"], tables, ctx, BS)
            page_idx, num_sel = select_pages(scores, ctx, max_budget, BS, budget_per_seq=budget)  # (n, Hkv, Kq)
            if n_stream:
                width = max(page_idx.shape[2], idx_s.shape[1])
                stream = stream_row[None, :, None]  # (1, Hkv, 1)
                page_idx = torch.where(stream, _pad(idx_s[:, None, :], width), _pad(page_idx, width)).contiguous()
                num_sel = torch.where(stream[..., 0], num_s[:, None], num_sel).to(torch.int32).contiguous()
        paged_decode(q, k_cache, v_cache, tables, ctx, self.scale, ks, vs, page_idx=page_idx, num_sel=num_sel, out=out)

    def _step_pages(self, ctx, max_pages: int, BS: int, reqs, dev):
        """Per-sequence Quest budgets and the streaming heads' page lists (sink pages, then the
        window's pages): budget (n,) int32, max_budget int, idx_s (n, Ks) int32, num_s (n,) int32."""
        n = ctx.shape[0]
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
        return budget, max_budget, idx_s.to(torch.int32), num_s[:, 0].to(torch.int32)


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x
