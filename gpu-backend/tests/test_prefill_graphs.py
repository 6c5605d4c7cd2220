"""PrefillGraphs' padding (engine/cuda_graphs.py), checked on CPU: the padded step that a graph
holds, run eagerly with the torch backend, gives the same logits and the same KV as the
unpadded eager step. (Capture and replay themselves need CUDA: bench/pod_engine.py runs them.)"""

import pytest
import torch

from edgeserve_pod.engine.cuda_graphs import PrefillGraphs, make_width_buckets
from edgeserve_pod.engine.scheduler import ScheduledBatch
from edgeserve_pod.engine.sequence import SamplingParams, Sequence
from edgeserve_pod.engine.step_inputs import build_step_inputs

from conftest import make_engine


def test_token_buckets():
    assert make_width_buckets(512, 16, 2) == [16, 32, 64, 128, 256, 512]
    assert make_width_buckets(100, 16, 2) == [16, 32, 64, 100]
    assert make_width_buckets(8, 16, 2) == [8]
    with pytest.raises(ValueError):
        make_width_buckets(0, 16, 2)


def _step(eng, prompts, cached_prefix=0):
    """Allocate blocks for `prompts` and pack one prefill-only step (the part past cached_prefix)."""
    seqs = []
    for i, p in enumerate(prompts):
        s = Sequence(f"r{i}", p, SamplingParams())
        assert eng.blocks.grow(s, len(p))
        s.num_computed_tokens = cached_prefix
        seqs.append(s)
    batch = ScheduledBatch(items=[(s, len(s) - cached_prefix) for s in seqs], num_prefill_seqs=len(seqs))
    return seqs, build_step_inputs(batch, eng.block_size)[0]


@pytest.mark.parametrize("lens", [(5,), (40, 7), (16, 1, 30)])
def test_padded_prefill_equals_unpadded(tiny_model, lens):
    eng = make_engine(tiny_model, kv_cache_blocks=64)
    r = eng.runner
    g = torch.Generator().manual_seed(sum(lens))
    prompts = [torch.randint(3, eng.arch.vocab_size, (n,), generator=g).tolist() for n in lens]
    seqs, inp = _step(eng, prompts)
    with torch.inference_mode():
        want = r.forward(inp).clone()
        kv_want = r.kv[:, :, :r.num_blocks].clone()
        r.kv.zero_()
        pg = PrefillGraphs(r.model, r.kv_caches, r.states, max_tokens=128, max_seqs=4, max_blocks=r.max_blocks_per_seq,
                           scratch_block=r.num_blocks, block_size=r.block_size, device=r.device)
        assert pg.supports(inp)
        T = pg.stage(inp)
        assert T >= sum(lens) and T in pg.t_buckets
        pg.body(T)
        got = pg.logits[:len(inp.logits_indices)]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the padded tokens went to the scratch block only
    torch.testing.assert_close(r.kv[:, :, :r.num_blocks], kv_want, rtol=1e-6, atol=1e-6)
    for s in seqs:
        eng.blocks.free(s)


def test_padded_prefill_after_cached_prefix(tiny_model):
    """The suffix of a prompt whose first 32 tokens are already in the cache."""
    eng = make_engine(tiny_model, kv_cache_blocks=64)
    r = eng.runner
    prompt = torch.randint(3, eng.arch.vocab_size, (45,), generator=torch.Generator().manual_seed(7)).tolist()
    (seq,), full = _step(eng, [prompt])
    pack = lambda n: build_step_inputs(ScheduledBatch(items=[(seq, n)], num_prefill_seqs=1), eng.block_size)[0]  # noqa: E731
    with torch.inference_mode():
        want = r.forward(full).clone()
        r.kv.zero_()
        seq.num_computed_tokens = 0
        prefix = pack(32)
        r.forward(prefix)  # the cached prefix: its KV, nothing sampled
        seq.num_computed_tokens = 32
        suffix = pack(13)
        assert suffix.num_prefill_tokens == 13 and suffix.cu_seqlens_k == [0, 45]
        pg = PrefillGraphs(r.model, r.kv_caches, r.states, max_tokens=64, max_seqs=2, max_blocks=r.max_blocks_per_seq,
                           scratch_block=r.num_blocks, block_size=r.block_size, device=r.device)
        pg.body(pg.stage(suffix))
    torch.testing.assert_close(pg.logits[:1], want, rtol=1e-5, atol=1e-5)


def test_supports_only_short_prefill_only_steps(tiny_model):
    eng = make_engine(tiny_model, kv_cache_blocks=64)
    r = eng.runner
    pg = PrefillGraphs(r.model, r.kv_caches, r.states, max_tokens=32, max_seqs=2, max_blocks=r.max_blocks_per_seq,
                       scratch_block=r.num_blocks, block_size=r.block_size, device=r.device)
    _, too_long = _step(eng, [[5] * 33])
    _, too_many = _step(eng, [[5] * 3] * 3)
    _, ok = _step(eng, [[5] * 20, [6] * 12])
    assert not pg.supports(too_long) and not pg.supports(too_many) and pg.supports(ok)
    ok.logits_indices = torch.arange(3)  # logits at more rows than the graph computes (prompt logprobs)
    assert not pg.supports(ok)
