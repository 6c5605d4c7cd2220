"""Sparse backend on real steps: Quest picks the planted pages, streaming heads read sink + window
pages, prefill runs the block-sparse kernel, per-request overrides switch sparsity off.
Checked against float32 references on the pages / masks the algorithm must choose."""
import pytest
import torch

from edgeserve_pod.kernels.block_sparse_prefill import plan_block_sparse, reference_block_sparse
from edgeserve_pod.kernels.paged_attention import reference_paged_attention
from edgeserve_pod.layers.attention_base import AttentionMetadata
from edgeserve_pod.layers.attention_sparse import SparseAttention, SparseAttentionConfig

DEV = "cuda" if torch.cuda.is_available() else "cpu"
HQ, HKV, D, BS = 4, 2, 32, 8
CFG = dict(token_budget=32, sink_tokens=8, window_tokens=16, streaming=[[False, True]],
           prefill_block_m=16, prefill_block_n=8)


def backend(**kw):
    be = SparseAttention(HQ, HKV, D, config=SparseAttentionConfig(**{**CFG, **kw}), minmax_dtype=torch.float32)
    return be, be.allocate_layer_state(16, BS, torch.device(DEV))


def prefill_then_decode(be, state, overrides=None):
    """Prefill one 69-token sequence (planted keys in pages 3 and 5), then decode token 70."""
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
    out_p = be.forward(0, q[:69].to(DEV), k[:69].to(DEV), v[:69].to(DEV), kc, vc, state, meta_p).cpu()
    meta_d = AttentionMetadata(0, 1, slots[69:].to(DEV), decode_block_tables=table[None].to(DEV),
                               decode_context_lens=torch.tensor([70], dtype=torch.int32, device=DEV), overrides=[overrides])
    out_d = be.forward(0, q[69:].to(DEV), k[69:].to(DEV), v[69:].to(DEV), kc, vc, state, meta_d).cpu()
    return q, k, v, kc.cpu(), vc.cpu(), table, out_p, out_d


def test_decode_selects_planted_and_window_pages():
    be, state = backend()
    q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
    # 9 pages, budget 4 pages: retrieval head keeps first, last and the planted 3, 5;
    # streaming head keeps the sink page 0 and the window pages (70 - 16) // 8 = 6 .. 8.
    pages = torch.tensor([[0, 3, 5, 8], [0, 6, 7, 8]])
    ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=pages)
    torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)
    dense = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5)
    assert (out_d - dense).abs().max() > 1e-3  # sparsity really changed the result


def test_prefill_is_block_sparse_per_head_map():
    be, state = backend()
    q, k, v, _, _, _, out_p, _ = prefill_then_decode(be, state)
    plan = plan_block_sparse(128, 8, 16, 16, 8)
    ref = reference_block_sparse(q[:69], k[:69], v[:69], torch.tensor([0, 0, 1, 1], dtype=torch.int32), plan, D ** -0.5)
    torch.testing.assert_close(out_p, ref, atol=2e-4, rtol=2e-4)


def test_request_override_turns_sparsity_off():
    be, state = backend()
    q, k, v, kc, vc, table, out_p, out_d = prefill_then_decode(be, state, overrides={"sparse": False})
    torch.testing.assert_close(out_d, reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5), atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(out_p, reference_paged_attention(q[:69], kc, vc, table, 69, D ** -0.5), atol=2e-4, rtol=2e-4)


def test_bad_config_and_overrides_are_clear_errors():
    with pytest.raises(ValueError, match="token_budget"):
        SparseAttentionConfig(token_budget=4)
    with pytest.raises(ValueError, match="overrides"):
        SparseAttentionConfig().for_request({"budget": 5})
    with pytest.raises(ValueError, match="kv heads"):
        SparseAttention(4, 2, 32, config=SparseAttentionConfig(streaming=[[True]]))


def test_all_streaming_layer_and_all_retrieval_layer():
    for streaming, pages in (([[True, True]], [[0, 6, 7, 8], [0, 6, 7, 8]]), ([[False, False]], [[0, 3, 5, 8], [0, 3, 5, 8]])):
        be, state = backend(streaming=streaming)
        q, k, v, kc, vc, table, _, out_d = prefill_then_decode(be, state)
        ref = reference_paged_attention(q[69:], kc, vc, table, 70, D ** -0.5, pages=torch.tensor(pages))
        torch.testing.assert_close(out_d, ref, atol=2e-4, rtol=2e-4)
