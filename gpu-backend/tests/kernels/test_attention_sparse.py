"""Sparse backend on real steps: Quest picks the planted pages, streaming heads read sink + window
pages, prefill runs the block-sparse kernel, per-request overrides switch sparsity off.
Checked against float32 references on the pages / masks the algorithm must choose."""
import pytest
import torch

from edgeserve_pod.kernels.block_sparse_prefill import plan_block_sparse, reference_block_sparse
from edgeserve_pod.kernels.paged_attention import reference_paged_attention
from edgeserve_pod.layers.attention_base import AttentionMetadata, OverrideError
from edgeserve_pod.layers.attention_sparse import SparseAttention, SparseAttentionConfig

DEV = "cuda" if torch.cuda.is_available() else "cpu"
HQ, HKV, D, BS = 4, 2, 32, 8
CFG = dict(token_budget=32, sink_tokens=8, window_tokens=16, streaming=[[False, True]],
           prefill_block_m=16, prefill_block_n=16)


@pytest.fixture(params=["triton", "torch"])
def impl(request):
    """Every test runs the Triton kernels (interpreter on CPU) and the torch path the CPU engine uses."""
    return request.param


def backend(impl="triton", **kw):
    be = SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(**{**CFG, **kw}), minmax_dtype=torch.float32,
                         impl=impl)
    return be, be.allocate_layer_state(16, BS, torch.device(DEV))


def prefill_then_decode(be, state, overrides=None, layer=0):
    """Prefill one 69-token sequence (planted keys in pages 3 and 5), then decode token 70, in
    the given layer of the backend."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    kc = torch.zeros(16, BS, HKV, D, device=DEV)
    vc = torch.zeros_like(kc)
    table = torch.randperm(16, generator=gen)[:9].to(torch.int32)
    u = torch.randn(D, generator=gen)
    k = 0.1 * torch.randn(70, HKV, D, generator=gen)
    k[3 * BS:4 * BS] = 0.5 * u
    k[5 * BS:6 * BS] = 0.5 * u
    v = torch.randn(70, HKV, D, generator=gen)
    q = torch.randn(70, HQ, D, generator=gen)
    q[69] = u  # the decode query aligns with the planted keys
    slots = (table[torch.arange(70) // BS].long() * BS + torch.arange(70) % BS)
    meta_p = AttentionMetadata(69, 0, slots[:69].to(DEV), cu_seqlens_q=torch.tensor([0, 69], dtype=torch.int32, device=DEV),
                               cu_seqlens_k=torch.tensor([0, 69], dtype=torch.int32, device=DEV), max_seqlen_q=69,
                               max_seqlen_k=69, prefill_block_tables=table[None].to(DEV), overrides=[overrides])
    out_p = be.forward(layer, q[:69].to(DEV), k[:69].to(DEV), v[:69].to(DEV), kc, vc, state, meta_p).cpu()
    meta_d = AttentionMetadata(0, 1, slots[69:].to(DEV), decode_block_tables=table[None].to(DEV),
                               decode_context_lens=torch.tensor([70], dtype=torch.int32, device=DEV), overrides=[overrides])
    out_d = be.forward(layer, q[69:].to(DEV), k[69:].to(DEV), v[69:].to(DEV), kc, vc, state, meta_d).cpu()
    return q, k, v, kc.cpu(), vc.cpu(), table, out_p, out_d


def test_decode_selects_planted_and_window_pages(impl):
    be, state = backend(impl)
    q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
    # 9 pages, budget 4 pages: retrieval head keeps first, last and the planted 3, 5;
    # streaming head keeps the sink page 0 and the window pages (70 - 16) // 8 = 6 .. 8.
    pages = torch.tensor([[0, 3, 5, 8], [0, 6, 7, 8]])
    ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=pages)
    torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)
    dense = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5)
    assert (out_d - dense).abs().max() > 1e-3  # sparsity really changed the result


def test_prefill_is_block_sparse_per_head_map(impl):
    be, state = backend(impl)
    q, k, v, _, _, _, out_p, _ = prefill_then_decode(be, state)
    plan = plan_block_sparse(128, 8, 16, 16, 16)
    ref = reference_block_sparse(q[:69], k[:69], v[:69], torch.tensor([0, 0, 1, 1], dtype=torch.int32), plan, D ** -0.5)
    torch.testing.assert_close(out_p, ref, atol=2e-4, rtol=2e-4)


def test_request_override_turns_sparsity_off(impl):
    be, state = backend(impl)
    q, k, v, kc, vc, table, out_p, out_d = prefill_then_decode(be, state, overrides={"sparse": False})
    torch.testing.assert_close(out_d, reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5), atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(out_p, reference_paged_attention(q[:69], kc, vc, table, 69, D ** -0.5), atol=2e-4, rtol=2e-4)


def test_bad_config_and_overrides_are_clear_errors():
    with pytest.raises(ValueError, match="token_budget"):
        SparseAttentionConfig(token_budget=4)
    with pytest.raises(ValueError, match="window_tokens"):  # a streaming head must see the current token
        SparseAttentionConfig(sink_tokens=0, window_tokens=0)
    with pytest.raises(OverrideError, match="overrides") as e:
        SparseAttentionConfig().for_request({"budget": 5})
    assert e.value.param == "attention.budget"
    with pytest.raises(ValueError, match="kv heads"):
        SparseAttention(4, 2, 32, config=SparseAttentionConfig(streaming=[[True]]))


@pytest.mark.parametrize("o, param", [
    ({"sparse": "false"}, "attention.sparse"), ({"sparse": 0}, "attention.sparse"),  # not truthy: booleans only
    ({"sink_tokens": True}, "attention.sink_tokens"), ({"token_budget": 4096.0}, "attention.token_budget"),
    ({"window_tokens": 2**40}, "attention.window_tokens"), ({"sink_tokens": 0, "window_tokens": 0}, "attention.window_tokens"),
    ({"token_budget": 2**20 + 1}, "attention.token_budget"), ({"reselect_every": 65}, "attention.reselect_every"),
    ({"reselect_every": None}, "attention.reselect_every"), ("sparse", "attention"),
])
def test_bad_request_overrides_are_refused_with_their_field(o, param):
    be = SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(**CFG))
    for check in (be.check_request_overrides, be.cfg.for_request):
        with pytest.raises(OverrideError) as e:
            check(o)
        assert e.value.param == param


@pytest.mark.parametrize("ctx", [72, 73])
def test_smallest_window_still_sees_the_current_token(impl, ctx):
    """sink 0 + window 1 (the least a request may ask for): the streaming head reads the page of
    the current token, also when that token is the last row of its page (window 0 left it no
    page at all there: NaN on Triton)."""
    be, state = backend(impl)
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    kc, vc = torch.randn(16, BS, HKV, D, generator=gen), torch.randn(16, BS, HKV, D, generator=gen)
    table = torch.randperm(16, generator=gen)[:10].to(torch.int32)
    q, k, v = torch.randn(1, HQ, D, generator=gen), torch.randn(1, HKV, D, generator=gen), torch.randn(1, HKV, D, generator=gen)
    slot = table[(ctx - 1) // BS].long() * BS + (ctx - 1) % BS
    meta = AttentionMetadata(0, 1, slot[None].to(DEV), decode_block_tables=table[None].to(DEV),
                             decode_context_lens=torch.tensor([ctx], dtype=torch.int32, device=DEV),
                             overrides=[{"sink_tokens": 0, "window_tokens": 1, "token_budget": 2**20}])
    kc, vc = kc.to(DEV), vc.to(DEV)
    out = be.forward(0, q.to(DEV), k.to(DEV), v.to(DEV), kc, vc, state, meta).cpu()
    last = (ctx - 1) // BS
    pages = torch.tensor([list(range(last + 1)), [last] * (last + 1)])  # retrieval head: every page (budget)
    ref = reference_paged_attention(q, kc.cpu(), vc.cpu(), table, ctx, D ** -0.5, pages=pages)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_good_request_overrides_pass_unchanged():
    be = SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(**CFG))
    o = {"sparse": False, "token_budget": 2**20, "sink_tokens": 0, "window_tokens": 1, "reselect_every": 64}
    assert be.check_request_overrides(o) == o
    assert be.cfg.for_request(o) == (False, 2**20, 0, 1, 64)
    assert be.check_request_overrides({}) is None and be.check_request_overrides(None) is None


def test_head_map_layer_count_must_match_the_model():
    for name, rows in (("streaming", [[True, False]]), ("dense_heads", [[False, True]] * 3)):
        cfg = SparseAttentionConfig(**{name: rows})
        with pytest.raises(ValueError, match=f"{name} has {len(rows)} layer rows; this model has 2 layers"):
            SparseAttention(HQ, HKV, D, config=cfg, num_layers=2)
    SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(streaming=[[True, False]] * 2), num_layers=2)


def test_all_streaming_layer_and_all_retrieval_layer(impl):
    for streaming, pages in (([[True, True]], [[0, 6, 7, 8], [0, 6, 7, 8]]), ([[False, False]], [[0, 3, 5, 8], [0, 3, 5, 8]])):
        be, state = backend(impl, streaming=streaming)
        q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
        ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=torch.tensor(pages))
        torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)


def decode_steps(be, state, n_steps, overrides=None, table=None, n_prefill=69, swap=False):
    """Prefill n_prefill tokens (pages 3, 5 planted along u; pages 1, 2 along w, orthogonal to
    u), then decode n_steps tokens: the first query points along u, the later ones along w (the
    other way round with swap). Returns the queries, caches, table and per-step outputs."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    P = n_prefill
    T = P + n_steps
    kc = torch.zeros(16, BS, HKV, D, device=DEV)
    vc = torch.zeros_like(kc)
    if table is None:
        table = torch.randperm(16, generator=gen)[:12].to(torch.int32)
    u = torch.nn.functional.normalize(torch.randn(D, generator=gen), dim=0) * 6
    w = torch.randn(D, generator=gen)
    w = torch.nn.functional.normalize(w - (w @ u) / (u @ u) * u, dim=0) * 6
    k = 0.1 * torch.randn(T, HKV, D, generator=gen)
    for p, d in ((3, u), (5, u), (1, w), (2, w)):
        k[p * BS:(p + 1) * BS] = 0.5 * d
    v = torch.randn(T, HKV, D, generator=gen)
    q = torch.randn(T, HQ, D, generator=gen)
    if swap:
        u, w = w, u
    q[P] = u
    q[P + 1:] = w
    slots = (table[torch.arange(T) // BS].long() * BS + torch.arange(T) % BS)
    meta_p = AttentionMetadata(P, 0, slots[:P].to(DEV), cu_seqlens_q=torch.tensor([0, P], dtype=torch.int32, device=DEV),
                               cu_seqlens_k=torch.tensor([0, P], dtype=torch.int32, device=DEV), max_seqlen_q=P,
                               max_seqlen_k=P, prefill_block_tables=table[None].to(DEV), overrides=[overrides])
    be.forward(0, q[:P].to(DEV), k[:P].to(DEV), v[:P].to(DEV), kc, vc, state, meta_p)
    outs = []
    for t in range(P, T):
        meta_d = AttentionMetadata(0, 1, slots[t:t + 1].to(DEV), decode_block_tables=table[None].to(DEV),
                                   decode_context_lens=torch.tensor([t + 1], dtype=torch.int32, device=DEV),
                                   overrides=[overrides])
        outs.append(be.forward(0, q[t:t + 1].to(DEV), k[t:t + 1].to(DEV), v[t:t + 1].to(DEV), kc, vc, state, meta_d).cpu())
    return q, kc.cpu(), vc.cpu(), table, outs


def stream_pages(ctx):  # kv head 1: sink page 0 + the pages of the last 16 tokens (padded to 4 by repeating page 0)
    p = [0] + list(range(max((ctx - 16) // BS, 1), -(-ctx // BS)))
    return [0] * (4 - len(p)) + p


@pytest.mark.parametrize("every, how", [(1, "config"), (2, "config"), (4, "config"), (4, "request")])
def test_reselect_every_k_steps(impl, every, how):
    """k = 1 selects on every step (Quest follows the query from u's pages to w's pages at once);
    k > 1 keeps the first step's pages for k steps, then selects again; a new last page (token
    72 starts page 9) always selects afresh and includes that page."""
    if how == "config":
        be, state = backend(impl, reselect_every=every)
        ov = None
    else:
        be, state = backend(impl)
        ov = {"reselect_every": every}
    q, kc, vc, table, outs = decode_steps(be, state, 5, ov)  # contexts 70 .. 74
    u_pages, w_pages = [0, 3, 5], [0, 1, 2]
    for step, out in enumerate(outs):
        ctx = 70 + step
        last = -(-ctx // BS) - 1
        fresh = step == 0 or ctx == 73 or (ctx < 73 and step % every == 0) or (ctx > 73 and (ctx - 73) % every == 0)
        chosen = (u_pages if step == 0 else w_pages) if fresh else (u_pages if ctx < 73 else w_pages)
        pages = torch.tensor([chosen + [last], stream_pages(ctx)])
        ref = reference_paged_attention(q[ctx - 1:ctx], kc, vc, table, ctx, D ** -0.5, pages=pages)
        torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4, msg=lambda m: f"k={every} ctx={ctx}: {m}")


def test_reselect_does_not_reuse_a_recycled_block(impl):
    """A kept selection belongs to one sequence: when its last block is freed and started again
    (row 0 rewritten) by another sequence in the same batch row, that row selects afresh."""
    be, state = backend(impl, reselect_every=8)
    table = torch.randperm(16)[:12].to(torch.int32)
    decode_steps(be, state, 1, table=table, swap=True)  # keeps w's pages for block table[8] at ctx 70
    # another sequence in the same blocks, one token further: same row, same last block, within
    # k tokens -- only the block's new generation tells the kept list is not its own
    q, kc, vc, _, outs = decode_steps(be, state, 2, table=table, n_prefill=70)
    for step, out in enumerate(outs):  # u pages at ctx 71 (fresh), kept at ctx 72 (w query)
        ctx = 71 + step
        pages = torch.tensor([[0, 3, 5, -(-ctx // BS) - 1], stream_pages(ctx)])
        ref = reference_paged_attention(q[ctx - 1:ctx], kc, vc, table, ctx, D ** -0.5, pages=pages)
        torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_prefill_after_cached_prefix_equals_one_shot(impl):
    """A prompt prefilled in three chunks (21, 29 and 19 tokens; the later two over the cached
    ones, off the page grid) gives the streaming heads the same block-sparse attention as one
    69-token prefill: Triton's paged prefill with head kinds, the torch path's masked pass."""
    be, state = backend(impl)
    q, k, v, kc, vc, table, out_p, _ = prefill_then_decode(be, state)  # one shot
    be2, state2 = backend(impl)
    kc2, vc2 = torch.zeros_like(kc, device=DEV), torch.zeros_like(vc, device=DEV)
    slots = (table[torch.arange(69) // BS].long() * BS + torch.arange(69) % BS)
    outs = []
    for lo, hi in ((0, 21), (21, 50), (50, 69)):
        meta = AttentionMetadata(hi - lo, 0, slots[lo:hi].to(DEV),
                                 cu_seqlens_q=torch.tensor([0, hi - lo], dtype=torch.int32, device=DEV),
                                 cu_seqlens_k=torch.tensor([0, hi], dtype=torch.int32, device=DEV), max_seqlen_q=hi - lo,
                                 max_seqlen_k=hi, prefill_block_tables=table[None].to(DEV))
        outs.append(be2.forward(0, q[lo:hi].to(DEV), k[lo:hi].to(DEV), v[lo:hi].to(DEV), kc2, vc2, state2, meta).cpu())
    o = torch.cat(outs)
    torch.testing.assert_close(o, out_p, atol=2e-5, rtol=2e-5)
    dense = reference_paged_attention(q[50:69], kc, vc, table, 69, D ** -0.5)
    assert (o[50:] - dense).abs().max() > 1e-3  # the streaming head really is restricted


def test_dense_layers_read_every_page_for_retrieval_heads(impl):
    """dense_layers = 1: layer 0's retrieval head attends every page, its streaming head still
    sink + window; layer 1 is back to Quest."""
    be, _ = backend(impl, dense_layers=1, streaming=[[False, True], [False, True]])
    quest_pages = torch.tensor([[0, 3, 5, 8], [0, 6, 7, 8]])
    for layer, pages in ((0, torch.tensor([list(range(9)), [0, 0, 0, 0, 0, 0, 6, 7, 8]])), (1, quest_pages)):
        state = be.allocate_layer_state(16, BS, torch.device(DEV))
        q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state, layer=layer)
        ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=pages)
        torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4, msg=lambda m: f"layer {layer}: {m}")
        if layer == 0:  # Quest's pages would give another result: the layer really is dense
            quest = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=quest_pages)
            assert (out_d - quest).abs().max() > 1e-3


def test_dense_heads_skip_quest(impl):
    """dense_heads marks a retrieval kv head that Quest leaves alone: it reads every page, the
    other retrieval head keeps its Quest pages, the streaming head its window."""
    be, state = backend(impl, streaming=[[False, True]], dense_heads=[[True, False]])
    q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
    pages = torch.tensor([list(range(9)), [0, 0, 0, 0, 0, 0, 6, 7, 8]])
    ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=pages)
    torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)
    be, state = backend(impl, streaming=[[False, False]], dense_heads=[[False, True]])
    q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
    pages = torch.tensor([[0, 3, 5, 8, 8, 8, 8, 8, 8], list(range(9))])
    ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=pages)
    torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)


def test_prefill_plan_and_mask_caches_are_bounded():
    """Requests choose sink and window, so cached plans / masks are keyed without bound: the
    least recently used leave past PLAN_CACHE_ENTRIES, a hit is the same object."""
    from edgeserve_pod.layers.attention_sparse import PLAN_CACHE_ENTRIES

    be, _ = backend("torch")
    keep = be._plan(100, 8, 16, "cpu")
    for sink in range(3 * PLAN_CACHE_ENTRIES):
        plan = be._plan(100, sink, 16, "cpu")
        be._stream_mask(plan, (sink, 16))
        assert be._plan(100, 8, 16, "cpu") is keep  # used on every round: never the oldest
    assert len(be._plans) == len(be._masks) == PLAN_CACHE_ENTRIES
    assert be._plan(100, 3 * PLAN_CACHE_ENTRIES - 1, 16, "cpu") is plan


@pytest.mark.parametrize("lo", [0, 21])
def test_mixed_prefill_settings_give_each_sequence_its_own_attention(impl, lo):
    """Four prompts in one prefill step: A and D (D differs only in token_budget, which prefill
    does not use) share the defaults, B has its own sink/window, C turns sparsity off. Each
    sequence's output equals its output when prefilled alone (lo = 21: after 21 cached tokens)."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    seqs = [(69, None), (45, {"token_budget": 4096}), (60, {"sink_tokens": 16, "window_tokens": 24}), (50, {"sparse": False})]
    data = [tuple(torch.randn(L, h, D, generator=gen) for h in (HQ, HKV, HKV)) for L, _ in seqs]
    tables = torch.randperm(40, generator=gen)[:36].to(torch.int32).view(4, 9)

    def prefill(idx):  # the [lo, L) tokens of sequences idx in one step, after each one's [0, lo) alone
        be, _ = backend(impl)
        state = be.allocate_layer_state(40, BS, torch.device(DEV))
        kc = torch.zeros(40, BS, HKV, D, device=DEV)
        vc = torch.zeros_like(kc)

        def step(parts):  # parts: (seq, a, b) new tokens a..b-1 of seq (context 0..b-1)
            cu_q, cu_k = [0], [0]
            for i, a, b in parts:
                cu_q.append(cu_q[-1] + b - a)
                cu_k.append(cu_k[-1] + b)
            slots = torch.cat([tables[i][torch.arange(a, b) // BS].long() * BS + torch.arange(a, b) % BS for i, a, b in parts])
            meta = AttentionMetadata(cu_q[-1], 0, slots.to(DEV), cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32, device=DEV),
                                     cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32, device=DEV),
                                     max_seqlen_q=max(b - a for _, a, b in parts), max_seqlen_k=max(b for _, _, b in parts),
                                     prefill_block_tables=tables[[i for i, _, _ in parts]].to(DEV),
                                     overrides=[seqs[i][1] for i, _, _ in parts], cu_seqlens_q_cpu=cu_q, cu_seqlens_k_cpu=cu_k)
            q, k, v = (torch.cat([data[i][j][a:b] for i, a, b in parts]).to(DEV) for j in range(3))
            out = be.forward(0, q, k, v, kc, vc, state, meta).cpu()
            return [out[x:y] for x, y in zip(cu_q, cu_q[1:])]

        if lo:
            for i in idx:
                step([(i, 0, lo)])
        return step([(i, lo, seqs[i][0]) for i in idx])

    batched = prefill([0, 1, 2, 3])
    for i in range(4):
        torch.testing.assert_close(batched[i], prefill([i])[0], atol=2e-5, rtol=2e-5, msg=lambda m: f"seq {i}: {m}")


def test_reselect_decision_shared_by_layers_equals_each_layer_alone(impl):
    """Two layers in one step share the keep-or-select decision (made by the first, from its
    record): each layer's outputs equal those of the same layer run alone, deciding for itself.
    Layer 1's planted pages are the other way round, so its own page lists differ from layer 0's."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    P, n = 69, 6
    T = P + n
    table = torch.randperm(16, generator=gen)[:12].to(torch.int32)
    slots = (table[torch.arange(T) // BS].long() * BS + torch.arange(T) % BS)
    u = torch.nn.functional.normalize(torch.randn(D, generator=gen), dim=0) * 6
    w = torch.randn(D, generator=gen)
    w = torch.nn.functional.normalize(w - (w @ u) / (u @ u) * u, dim=0) * 6
    data = []
    for a, b in ((u, w), (w, u)):  # layer 0, layer 1
        k = 0.1 * torch.randn(T, HKV, D, generator=gen)
        for p, d in ((3, a), (5, a), (1, b), (2, b)):
            k[p * BS:(p + 1) * BS] = 0.5 * d
        q = torch.randn(T, HQ, D, generator=gen)
        q[P], q[P + 1:] = u, w
        data.append((q, k, torch.randn(T, HKV, D, generator=gen)))
    cfg = {**CFG, "streaming": [[False, True], [False, True]], "reselect_every": 3}

    def run(layers):
        be = SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(**cfg), minmax_dtype=torch.float32, impl=impl)
        st = {layer: be.allocate_layer_state(16, BS, torch.device(DEV)) for layer in layers}
        kv = {layer: (torch.zeros(16, BS, HKV, D, device=DEV), torch.zeros(16, BS, HKV, D, device=DEV)) for layer in layers}
        meta = AttentionMetadata(P, 0, slots[:P].to(DEV), cu_seqlens_q=torch.tensor([0, P], dtype=torch.int32, device=DEV),
                                 cu_seqlens_k=torch.tensor([0, P], dtype=torch.int32, device=DEV), max_seqlen_q=P,
                                 max_seqlen_k=P, prefill_block_tables=table[None].to(DEV), overrides=[None])
        for layer in layers:
            q, k, v = data[layer]
            be.forward(layer, q[:P].to(DEV), k[:P].to(DEV), v[:P].to(DEV), *kv[layer], st[layer], meta)
        outs = {layer: [] for layer in layers}
        for t in range(P, T):  # one metadata per step, shared by the layers, as the model runner does
            meta = AttentionMetadata(0, 1, slots[t:t + 1].to(DEV), decode_block_tables=table[None].to(DEV),
                                     decode_context_lens=torch.tensor([t + 1], dtype=torch.int32, device=DEV),
                                     overrides=[None])
            for layer in layers:
                q, k, v = data[layer]
                outs[layer].append(be.forward(layer, q[t:t + 1].to(DEV), k[t:t + 1].to(DEV), v[t:t + 1].to(DEV),
                                              *kv[layer], st[layer], meta).cpu())
        return outs, {layer: st[layer]["sel_idx"][0, 0].cpu() for layer in layers}

    (both, kept), (a0, _), (a1, _) = run([0, 1]), run([0]), run([1])
    alone = {0: a0[0], 1: a1[1]}
    for layer in (0, 1):
        for t in range(n):
            torch.testing.assert_close(both[layer][t], alone[layer][t], atol=1e-6, rtol=1e-6)
    # the retrieval head's kept page lists differ between the layers: a layer reading another's
    # list would not match its own run
    assert not torch.equal(kept[0], kept[1])
