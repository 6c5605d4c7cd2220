"""Sparse attention with constant-size KV for streaming heads (EngineConfig.streaming_kv="ring").

The sparse backend (attention_sparse.py) makes streaming heads READ only sink + window, but
stores their K/V for every token. Here they are not stored in the paged cache at all:

Storage, per layer l with r_l retrieval and s_l streaming kv heads:
    k_cache, v_cache   (num_blocks + 1, BS, r_l, D)   the paged cache, retrieval heads only
    ring_k, ring_v     ((slots + 1) * P, BS, s_l, D)  in layer_state; slot `slots` is scratch
    kmin, kmax         (num_blocks + 1, r_l, D)        Quest state, retrieval heads only
A running sequence owns a ring slot s (engine/scheduler.py), P = Sp + Wp pages of it:
    Sp = ceil(sink_end / BS) sink pages, sink_end = the prefill mask's sink (sink rounded up to
         prefill_block_n; decode's sink pages are fewer);
    Wp = (window + chunk + prefill_block_m + prefill_block_n) // BS + 2 window pages, chunk =
         max_num_batched_tokens: a later prefill chunk's first query still finds its window (the
         prefill mask reaches up to window + block_m + block_n - 2 keys back) after the chunk's own
         tokens were written, and those pages are distinct modulo Wp.
The ring's size depends on sink, window, chunk and max_num_seqs, never on max_model_len.

Virtual block table: row i with slot s maps logical page j to ring page
    vt[i, j] = s * P + (j if j < Sp else Sp + (j - Sp) % Wp),
so the existing kernels read the ring unchanged, with vt as their block table. Logical pages
outside the ring's live range alias ring pages that hold other positions; they are never read
unmasked:
  - paged_decode with page_idx = the streaming heads' page lists (sink pages, then the pages of
    the last `window` tokens, _step_pages): the kernel visits only listed pages, and keys past
    the context by the `pos < ctx` mask;
  - paged_prefill with head_kind all-streaming + StreamingMask: every key loaded from an aliased
    page (a sink tile past sink_end, the part of the first window tile below the row's lo, keys
    past hi) gets a -inf score; the rows are finite (the ring starts zeroed, then holds written
    K/V), so p = 0 times the value adds exactly 0;
  - the torch paths gather every page of vt, then mask with the same page list (_torch_decode)
    or the same block-sparse mask rows (_torch_ring_prefill).
Writes: retrieval heads as in full mode (main cache at meta.slot_mapping, Quest min/max, block
generation). Streaming heads: token p goes to ring row vt[row, p // BS] * BS + p % BS; of a
prefill chunk only the tokens that survive it (page j < Sp or j > last_page - Wp), so no two
tokens of a step share a ring row (GPU scatter order is undefined). Decode computes its rows on
the device from (meta.seq_slots, context lens), once per step, so CUDA graphs and multi-step
decode (slots fixed, contexts growing) replay it; prefill computes them on the host.

Heads are split with index tensors built once per layer (q heads h*G .. h*G+G-1 of kv head h);
the model's weights are not permuted (every linear format and TP stay as they are). Decode: the
retrieval heads run the sparse backend's decode (Quest) over the paged cache, the streaming
heads one paged_decode over the ring. Prefill without a cached prefix: block_sparse_prefill on
all heads as in full mode (it reads k/v before they are cached). A later chunk: retrieval heads
dense paged prefill over the paged cache, streaming heads paged prefill over the ring with the
StreamingMask.

What ring mode does not do: serve `attention.sparse = false`, or a sink / window larger than the
model's (refused at admission: the K/V is gone); prefix caching (switched off by EngineConfig:
a cached block holds no streaming-head K/V and no ring); tensor parallelism; KV transfer (export
and import refuse; the CLI refuses roles prefill/decode). The geometry is fixed at start-up from
the model's SparseAttentionConfig: changing cfg.prefill_block_m/n afterwards breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.paged_attention import FP8, StreamingMask, paged_decode, paged_prefill
from ..kernels.quest import update_page_minmax
from ..kernels.sparse_kv_write import write_kv_minmax_decode
from .attention_base import AttentionMetadata, OverrideError
from .attention_sparse import SparseAttention
from .kv_write import dequantize, quantize_fp8, write_kv


@dataclass(frozen=True)
class RingGeometry:
    block_size: int
    sink_pages: int  # Sp
    window_pages: int  # Wp
    slots: int  # ring slots of running sequences; slot `slots` is the scratch slot (padded rows)

    @property
    def pages_per_slot(self) -> int:  # P
        return self.sink_pages + self.window_pages

    @property
    def num_pages(self) -> int:  # ring pages per layer, scratch slot included
        return (self.slots + 1) * self.pages_per_slot

    @classmethod
    def for_config(cls, sink: int, window: int, block_m: int, block_n: int, block_size: int, chunk: int,
                   slots: int) -> "RingGeometry":
        sink_end = -(-sink // block_n) * block_n
        return cls(block_size, -(-sink_end // block_size), (window + chunk + block_m + block_n) // block_size + 2, slots)

    def virtual_tables(self, seq_slots: torch.Tensor, width: int) -> torch.Tensor:
        """(n, width) int32 ring pages of logical pages 0..width-1 for each row's slot (device ops only)."""
        j = torch.arange(width, dtype=torch.int32, device=seq_slots.device)
        Sp = self.sink_pages
        page = torch.where(j < Sp, j, Sp + (j - Sp) % self.window_pages)
        return (seq_slots.to(torch.int32)[:, None] * self.pages_per_slot + page[None, :]).to(torch.int32)


@dataclass(frozen=True)
class HeadSplit:
    """One layer's heads: kv head ids and index tensors of the retrieval (r) and streaming (s) parts."""

    r_heads: list[int]
    s_heads: list[int]
    r_kv: torch.Tensor  # (r_l,) int64 kv heads
    s_kv: torch.Tensor  # (s_l,) int64
    rq: torch.Tensor  # (r_l * G,) int64 q heads
    sq: torch.Tensor  # (s_l * G,) int64
    s_kind: torch.Tensor  # (s_l * G,) int32 ones: paged_prefill's head_kind for the ring


class RingSparseAttention(SparseAttention):
    name = "sparse-ring"

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None,
                 kv_dtype: torch.dtype | None = None, config=None, minmax_dtype: torch.dtype | None = None,
                 impl: str = "auto", num_layers: int | None = None, *, block_size: int, ring_slots: int, ring_chunk: int):
        super().__init__(num_heads, num_kv_heads, head_dim, scale, kv_dtype, config, minmax_dtype, impl, num_layers)
        c = self.cfg
        if c.streaming is None or not any(any(r) for r in c.streaming):
            raise ValueError("streaming_kv='ring' needs a head map with at least one streaming head")
        if not c.enabled:
            raise ValueError("streaming_kv='ring' needs sparse attention enabled in the head map")
        if self.kv_dtype is None:
            raise ValueError("RingSparseAttention needs kv_dtype (it allocates the caches)")
        self.geo = RingGeometry.for_config(c.sink_tokens, c.window_tokens, c.prefill_block_m, c.prefill_block_n,
                                           block_size, ring_chunk, ring_slots)
        self._splits: dict[tuple[int, str], HeadSplit] = {}

    # ------------------------------------------------------------------------- start-up
    def heads(self, layer: int) -> tuple[int, int]:
        """(r_l, s_l): retrieval and streaming kv heads of a layer."""
        s = sum(self.cfg.streaming[layer])
        return self.num_kv_heads - s, s

    def bytes_per_block(self, num_layers: int, block_size: int) -> int:
        """Paged-cache bytes of one block: K and V of every layer's retrieval heads."""
        return 2 * block_size * sum(self.heads(l)[0] for l in range(num_layers)) * self.head_dim * self._elem()

    def ring_bytes(self, num_layers: int) -> int:
        """Bytes of every layer's ring (scratch slot included)."""
        rows = self.geo.num_pages * self.geo.block_size
        return 2 * rows * sum(self.heads(l)[1] for l in range(num_layers)) * self.head_dim * self._elem()

    def _elem(self) -> int:
        return torch.empty(0, dtype=self.kv_dtype).element_size()

    def allocate_layer(self, layer: int, num_blocks: int, block_size: int, device: torch.device):
        """(k_cache, v_cache, state) of one layer: the paged cache of its retrieval heads
        (num_blocks, BS, r_l, D), Quest state for them, the ring (ring_k / ring_v) of its streaming
        heads, and fp8 scales per part. Index tensors are built here, before any graph capture."""
        if block_size != self.geo.block_size:
            raise ValueError(f"ring built for block size {self.geo.block_size}, cache asks for {block_size}")
        r, s = self.heads(layer)
        self._split(layer, device)
        z = dict(dtype=self.kv_dtype, device=device)
        k_cache = torch.zeros(num_blocks, block_size, r, self.head_dim, **z)
        v_cache = torch.zeros_like(k_cache)
        state = self.allocate_layer_state(num_blocks, block_size, device, num_kv_heads=r)
        state["ring_k"] = torch.zeros(self.geo.num_pages, block_size, s, self.head_dim, **z)
        state["ring_v"] = torch.zeros_like(state["ring_k"])
        if self.kv_dtype == FP8:
            state["ring_k_scale"] = torch.zeros(s, dtype=torch.float32, device=device)
            state["ring_v_scale"] = torch.zeros(s, dtype=torch.float32, device=device)
        return k_cache, v_cache, state

    def _split(self, layer: int, device) -> HeadSplit:
        key = (layer, str(device))
        if key not in self._splits:
            row = self.cfg.streaming[layer]
            g = self.num_heads // self.num_kv_heads
            r = [h for h, st in enumerate(row) if not st]
            s = [h for h, st in enumerate(row) if st]
            q_of = lambda hs: torch.tensor([h * g + i for h in hs for i in range(g)], dtype=torch.int64, device=device)  # noqa: E731
            self._splits[key] = HeadSplit(r, s, torch.tensor(r, dtype=torch.int64, device=device),
                                          torch.tensor(s, dtype=torch.int64, device=device), q_of(r), q_of(s),
                                          torch.ones(len(s) * g, dtype=torch.int32, device=device))
        return self._splits[key]

    # ------------------------------------------------------------------------ admission
    def check_request_overrides(self, o: dict | None) -> dict | None:
        """Full mode's checks, then what the ring cannot serve: the K/V outside the model's sink and
        window is not kept, so dense attention or a larger sink / window is refused."""
        o = super().check_request_overrides(o)
        if not o:
            return o
        if o.get("sparse", True) is False:
            raise OverrideError("attention.sparse=false cannot be served: this pod keeps only the sink and window "
                                "K/V of streaming heads (streaming_kv='ring')", "attention.sparse")
        for name, limit in (("sink_tokens", self.cfg.sink_tokens), ("window_tokens", self.cfg.window_tokens)):
            if o.get(name, limit) > limit:
                raise OverrideError(f"attention.{name} must be at most {limit} on this pod (streaming_kv='ring' keeps "
                                    f"the model's {name} only), got {o[name]}", f"attention.{name}")
        return o

    # ------------------------------------------------------------------------------ step
    def forward(self, layer, q, k, v, k_cache, v_cache, layer_state, meta: AttentionMetadata) -> torch.Tensor:
        # q (T, Hq, D); k, v (T, Hkv, D); caches (num_blocks, BS, r_l, D); ring in layer_state
        if meta.seq_slots is None:
            raise ValueError("streaming_kv='ring' needs meta.seq_slots (each sequence's ring slot)")
        sp = self._split(layer, q.device)
        ks, vs = layer_state.get("k_scale"), layer_state.get("v_scale")
        n_p = meta.num_prefill_tokens
        n_seq_p = 0 if meta.cu_seqlens_q is None else meta.cu_seqlens_q.numel() - 1
        if sp.r_heads:
            kr, vr = k.index_select(1, sp.r_kv), v.index_select(1, sp.r_kv)
            if n_p == 0 and self._triton(q) and (ks is None or self.fp8_scales_ready):
                write_kv_minmax_decode(kr, vr, k_cache, v_cache, meta.slot_mapping, layer_state["kmin"],
                                       layer_state["kmax"], layer_state["blk_gen"], ks, vs)
            else:
                write_kv(kr, vr, k_cache, v_cache, meta.slot_mapping, ks, vs)
                update_page_minmax(kr, meta.slot_mapping, layer_state["kmin"], layer_state["kmax"], k_cache.shape[1])
                BS = k_cache.shape[1]
                layer_state["blk_gen"].index_add_(0, meta.slot_mapping // BS, (meta.slot_mapping % BS == 0).to(torch.int32))
        if sp.s_heads:
            self._ring_write(k.index_select(1, sp.s_kv), v.index_select(1, sp.s_kv), layer_state, meta, n_seq_p)
        out = torch.empty_like(q)
        reqs = meta.__dict__.get("_sparse_reqs")
        if reqs is None:
            reqs = meta.__dict__["_sparse_reqs"] = ([self.cfg.for_request(o) for o in meta.overrides]
                                                   if any(meta.overrides) else [])
        if n_p:
            self._prefill(layer, q[:n_p], k[:n_p], v[:n_p], k_cache, v_cache, ks, vs, meta, reqs[:n_seq_p], out[:n_p],
                          layer_state)
        if meta.num_decode_tokens:
            self._ring_decode(layer, q[n_p:], k_cache, v_cache, ks, vs, layer_state, meta, reqs[n_seq_p:], out[n_p:],
                              sp, n_seq_p)
        return out

    def _ring_write(self, k_s, v_s, state, meta, n_seq_p: int) -> None:
        """Streaming heads' K/V (T, s_l, D) into the ring: the prefill tokens that survive their
        chunk, then one token per decode row."""
        rk, rv = state["ring_k"], state["ring_v"]
        rks, rvs = state.get("ring_k_scale"), state.get("ring_v_scale")
        n_p = meta.num_prefill_tokens
        if n_p:
            w = meta.__dict__.get("_ring_w_p")
            if w is None:
                w = meta.__dict__["_ring_w_p"] = self._prefill_ring_rows(meta, n_seq_p, k_s.device)
            idx, rows = w
            if rks is not None and not self.fp8_scales_ready:  # the calibration: scales from every token, as in full mode
                quantize_fp8(k_s, rks), quantize_fp8(v_s, rvs)
            write_kv(k_s.index_select(0, idx), v_s.index_select(0, idx), rk, rv, rows, rks, rvs)
        if meta.num_decode_tokens:
            rows = meta.__dict__.get("_ring_w_d")
            if rows is None:
                BS = self.geo.block_size
                p = meta.decode_context_lens.to(torch.int64) - 1
                vt = self._decode_vt(meta, n_seq_p)
                rows = meta.__dict__["_ring_w_d"] = vt.gather(1, (p // BS)[:, None])[:, 0].to(torch.int64) * BS + p % BS
            write_kv(k_s[n_p:], v_s[n_p:], rk, rv, rows, rks, rvs)

    def _prefill_ring_rows(self, meta, n_seq_p: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
        """(token index (m,) int64, ring row (m,) int64) of the prefill tokens kept in the ring: of
        each sequence's chunk, those on a sink page or on one of the last Wp pages (host work:
        prefill is not graph-captured)."""
        g, BS = self.geo, self.geo.block_size
        cu_q = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else meta.cu_seqlens_q.tolist()
        cu_k = meta.cu_seqlens_k_cpu if meta.cu_seqlens_k_cpu is not None else meta.cu_seqlens_k.tolist()
        slots = meta.seq_slots[:n_seq_p].tolist()
        idx, rows = [], []
        for i in range(n_seq_p):
            lq, lk = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
            if lq == 0:
                continue
            p = torch.arange(lk - lq, lk)
            j = p // BS
            keep = (j < g.sink_pages) | (j > (lk - 1) // BS - g.window_pages)
            p, j = p[keep], j[keep]
            page = torch.where(j < g.sink_pages, j, g.sink_pages + (j - g.sink_pages) % g.window_pages)
            idx.append(cu_q[i] + p - (lk - lq))
            rows.append((slots[i] * g.pages_per_slot + page) * BS + p % BS)
        if not idx:
            z = torch.zeros(0, dtype=torch.int64, device=dev)
            return z, z
        return torch.cat(idx).to(dev), torch.cat(rows).to(dev)

    def _decode_vt(self, meta, n_seq_p: int) -> torch.Tensor:  # (n_d, W) int32, once per step
        vt = meta.__dict__.get("_ring_vt_d")
        if vt is None:
            vt = meta.__dict__["_ring_vt_d"] = self.geo.virtual_tables(meta.seq_slots[n_seq_p:],
                                                                       meta.decode_block_tables.shape[1])
        return vt

    # ---------------------------------------------------------------------------- decode
    def _ring_decode(self, layer, q, k_cache, v_cache, ks, vs, state, meta, reqs, out, sp: HeadSplit, n_seq_p: int):
        ctx, tables = meta.decode_context_lens, meta.decode_block_tables
        BS = self.geo.block_size
        if meta.__dict__.get("_sparse_step") is None:  # shared by both parts and every layer
            meta.__dict__["_sparse_step"] = self._step_pages(ctx, tables, BS, reqs, q.device)
        if sp.r_heads:  # Quest over the paged cache, as in full mode
            o_r = torch.empty(q.shape[0], sp.rq.numel(), q.shape[2], dtype=q.dtype, device=q.device)
            self._decode(layer, q.index_select(1, sp.rq), k_cache, v_cache, ks, vs, state, meta, reqs, o_r,
                         heads=sp.r_heads)
            out.index_copy_(1, sp.rq, o_r)
        if sp.s_heads:  # sink + window pages over the ring
            s = len(sp.s_heads)
            lists = meta.__dict__.setdefault("_ring_pages", {})  # per step and streaming-head count
            if s not in lists:
                _, _, idx_s, num_s, _, _ = meta.__dict__["_sparse_step"]
                lists[s] = (idx_s[:, None, :].expand(-1, s, -1).contiguous(), num_s[:, None].expand(-1, s).contiguous())
            page_idx, num_sel = lists[s]
            vt = self._decode_vt(meta, n_seq_p)
            rk, rv, rks, rvs = state["ring_k"], state["ring_v"], state.get("ring_k_scale"), state.get("ring_v_scale")
            q_s = q.index_select(1, sp.sq)
            if self._triton(q):
                o_s = paged_decode(q_s, rk, rv, vt, ctx, self.scale, rks, rvs, page_idx=page_idx, num_sel=num_sel)
            else:
                o_s = self._torch_decode(q_s, rk, rv, rks, rvs, vt, ctx, page_idx, num_sel)
            out.index_copy_(1, sp.sq, o_s)

    # --------------------------------------------------------------------------- prefill
    def _prefill_group(self, layer, q, k, v, k_cache, v_cache, ks, vs, meta, on, sink, window, out, state=None):
        if meta.cu_seqlens_q_cpu is not None and meta.cu_seqlens_k_cpu is not None:
            no_prefix = meta.cu_seqlens_q_cpu == meta.cu_seqlens_k_cpu
        else:
            no_prefix = torch.equal(meta.cu_seqlens_q, meta.cu_seqlens_k)
        assert on, "ring mode refuses sparse=false at admission"
        if no_prefix:  # block_sparse_prefill reads k, v as given: all heads, as in full mode
            super()._prefill_group(layer, q, k, v, k_cache, v_cache, ks, vs, meta, on, sink, window, out)
            return
        sp, tri = self._split(layer, q.device), self._triton(q)
        cu_q, cu_k = meta.cu_seqlens_q, meta.cu_seqlens_k
        if sp.r_heads:  # retrieval heads: dense causal over the paged cache
            q_r = q.index_select(1, sp.rq)
            if tri:
                o_r = paged_prefill(q_r, k_cache, v_cache, meta.prefill_block_tables, cu_q, cu_k, meta.max_seqlen_q,
                                    self.scale, ks, vs)
            else:
                o_r = self._dense._prefill(q_r, k_cache, v_cache, ks, vs, meta)
            out.index_copy_(1, sp.rq, o_r)
        if sp.s_heads:  # streaming heads: the full prompt's block-sparse rows, over the ring
            n_seq = meta.prefill_block_tables.shape[0]  # seq_slots: prefill sequences first, then decodes
            vt = self.geo.virtual_tables(meta.seq_slots[:n_seq], meta.prefill_block_tables.shape[1])
            rk, rv, rks, rvs = state["ring_k"], state["ring_v"], state.get("ring_k_scale"), state.get("ring_v_scale")
            q_s = q.index_select(1, sp.sq)
            if tri:
                mask = StreamingMask(sink, window, self.cfg.prefill_block_m, self.cfg.prefill_block_n)
                o_s = paged_prefill(q_s, rk, rv, vt, cu_q, cu_k, meta.max_seqlen_q, self.scale, rks, rvs,
                                    head_kind=sp.s_kind, streaming=mask)
            else:
                o_s = self._torch_ring_prefill(q_s, rk, rv, rks, rvs, vt, meta, sink, window)
            out.index_copy_(1, sp.sq, o_s)

    def _torch_ring_prefill(self, q_s, rk, rv, rks, rvs, vt, meta, sink, window) -> torch.Tensor:
        """Streaming heads of a later chunk in torch: each sequence's context gathered through vt,
        masked with the rows of the full prompt's block-sparse mask at the queries' positions."""
        BS = self.geo.block_size
        cu_q = meta.cu_seqlens_q_cpu if meta.cu_seqlens_q_cpu is not None else meta.cu_seqlens_q.tolist()
        cu_k = meta.cu_seqlens_k_cpu if meta.cu_seqlens_k_cpu is not None else meta.cu_seqlens_k.tolist()
        plan = self._plan(max(cu_k[i + 1] - cu_k[i] for i in range(len(cu_k) - 1)), sink, window, q_s.device)
        full = self._stream_mask(plan, (sink, window))
        out = torch.zeros_like(q_s)
        for i in range(len(cu_q) - 1):
            a, b = cu_q[i], cu_q[i + 1]
            lq, lk = b - a, cu_k[i + 1] - cu_k[i]
            if lq == 0:
                continue
            pages = vt[i, :(lk + BS - 1) // BS].long()
            kk = dequantize(rk[pages].flatten(0, 1)[:lk], rks, q_s.dtype).transpose(0, 1)[None]  # (1, s_l, lk, D)
            vv = dequantize(rv[pages].flatten(0, 1)[:lk], rvs, q_s.dtype).transpose(0, 1)[None]
            qi = q_s[a:b].transpose(0, 1)[None]  # (1, s_l * G, lq, D)
            mask = full[lk - lq:lk, :lk]
            for r in range(0, lq, 1024):
                o = F.scaled_dot_product_attention(qi[:, :, r:r + 1024], kk, vv, attn_mask=mask[r:r + 1024],
                                                   scale=self.scale, enable_gqa=True)
                out[a + r:a + r + o.shape[2]] = o[0].transpose(0, 1)
        return out

    def rebuild_block_state(self, layer, k_cache, v_cache, layer_state, blocks) -> None:
        raise ValueError("streaming_kv='ring' does not take imported KV blocks")
