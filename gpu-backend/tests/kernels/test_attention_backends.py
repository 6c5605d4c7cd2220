"""Attention backends on one mixed step (two prefills, one with a cached prefix, plus decodes)
vs the float32 paged reference, fresh random inputs."""
import pytest
import torch

from edgeserve_pod.kernels.paged_attention import FP8, reference_paged_attention
from edgeserve_pod.layers.attention_base import AttentionMetadata
from edgeserve_pod.layers.attention_triton import TritonAttention

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def mixed_step(hq, hkv, d, bs, dtype, gen, num_blocks=64):
    """Sequences: P0 prefill 40 new (ctx 40); P1 prefill 9 new after a cached 16 (ctx 25);
    D0 decode at ctx 33; D1 decode at ctx 70. Returns backend inputs + what the reference needs."""
    ctx = [40, 25, 33, 70]
    new = [40, 9, 1, 1]
    perm = torch.randperm(num_blocks, generator=gen)
    width = -(-max(ctx) // bs)
    tables = torch.zeros(4, width, dtype=torch.int32)
    at = 0
    for i, c in enumerate(ctx):
        n = -(-c // bs)
        tables[i, :n] = perm[at:at + n]
        at += n
    act = torch.float32 if dtype == torch.float32 else torch.bfloat16
    k_cache = torch.zeros(num_blocks, bs, hkv, d, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    # Full-context K/V per sequence; the old part goes into the cache now, the new part via forward.
    kv = [(torch.randn(c, hkv, d, generator=gen).to(act), torch.randn(c, hkv, d, generator=gen).to(act)) for c in ctx]
    slots = [tables[i, torch.arange(c) // bs].long() * bs + torch.arange(c) % bs for i, c in enumerate(ctx)]
    q = torch.randn(sum(new), hq, d, generator=gen).to(act)
    k_new = torch.cat([kv[i][0][ctx[i] - new[i]:] for i in range(4)])
    v_new = torch.cat([kv[i][1][ctx[i] - new[i]:] for i in range(4)])
    slot_new = torch.cat([slots[i][ctx[i] - new[i]:] for i in range(4)])
    old = [(kv[i][0][:ctx[i] - new[i]], kv[i][1][:ctx[i] - new[i]], slots[i][:ctx[i] - new[i]]) for i in range(4)]
    meta = AttentionMetadata(
        num_prefill_tokens=49, num_decode_tokens=2, slot_mapping=slot_new.to(DEV),
        cu_seqlens_q=torch.tensor([0, 40, 49], dtype=torch.int32, device=DEV),
        cu_seqlens_k=torch.tensor([0, 40, 65], dtype=torch.int32, device=DEV),
        max_seqlen_q=40, max_seqlen_k=40, prefill_block_tables=tables[:2].to(DEV),
        decode_block_tables=tables[2:].to(DEV),
        decode_context_lens=torch.tensor(ctx[2:], dtype=torch.int32, device=DEV), overrides=[None] * 4)
    return q, k_new, v_new, k_cache, v_cache, meta, tables, ctx, new, old


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, FP8])
def test_triton_backend_mixed_step(kv_dtype):
    from edgeserve_pod.layers.kv_write import write_kv

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    hq, hkv, d, bs = 4, 2, 32, 16
    q, k, v, kc, vc, meta, tables, ctx, new, old = mixed_step(hq, hkv, d, bs, kv_dtype, gen)
    be = TritonAttention(hq, hkv, d, kv_dtype=kv_dtype)
    state = {n: t.to(DEV) for n, t in be.allocate_layer_state(64, bs, torch.device("cpu")).items()}
    kc, vc = kc.to(DEV), vc.to(DEV)
    if kv_dtype == FP8:  # scales from all K/V of the step, as the engine's start-up calibration does
        allk = torch.cat([o[0] for o in old] + [k]).to(DEV)
        allv = torch.cat([o[1] for o in old] + [v]).to(DEV)
        write_kv(allk[:1], allv[:1], kc, vc, meta.slot_mapping[:1], state["k_scale"], state["v_scale"])
        state["k_scale"].copy_(allk.float().abs().amax((0, 2)) / 448)
        state["v_scale"].copy_(allv.float().abs().amax((0, 2)) / 448)
    for ko, vo, so in old:
        if len(so):
            write_kv(ko.to(DEV), vo.to(DEV), kc, vc, so.to(DEV), state.get("k_scale"), state.get("v_scale"))
    out = be.forward(0, q.to(DEV), k.to(DEV), v.to(DEV), kc, vc, state, meta).cpu().float()
    kcc, vcc = kc.cpu(), vc.cpu()
    ks = state["k_scale"].cpu() if kv_dtype == FP8 else None
    vs = state["v_scale"].cpu() if kv_dtype == FP8 else None
    tol = {torch.float32: 2e-4, torch.bfloat16: 3e-2, FP8: 8e-2}[kv_dtype]
    at = 0
    for i in range(4):
        ref = reference_paged_attention(q[at:at + new[i]], kcc, vcc, tables[i], ctx[i], d ** -0.5, ks, vs)
        torch.testing.assert_close(out[at:at + new[i]], ref, atol=tol, rtol=tol)
        at += new[i]
