"""The fused decode KV write of the sparse backend equals the unfused ops it replaces."""
import pytest
import torch

from edgeserve_pod.kernels.quest import update_page_minmax
from edgeserve_pod.kernels.sparse_kv_write import write_kv_minmax_decode
from edgeserve_pod.layers.kv_write import write_kv

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("with_gen", [True, False])
def test_fused_decode_write_equals_unfused(with_gen):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    nb, bs, hkv, d = 12, 4, 3, 16
    kc = torch.randn(nb, bs, hkv, d, generator=g).to(DEV)
    vc = torch.randn(nb, bs, hkv, d, generator=g).to(DEV)
    kmin = torch.randn(nb, hkv, d, generator=g).to(DEV)
    kmax = kmin + 1
    gen = torch.randint(0, 5, (nb,), generator=g, dtype=torch.int32).to(DEV)
    # one token per block: rows 0 (a fresh block) and others (running min/max)
    slots = torch.tensor([3 * bs + 0, 5 * bs + 2, 7 * bs + 3, 1 * bs + 0, 10 * bs + 1]).to(DEV)
    qkv = torch.randn(5, 3 * hkv, d, generator=g).to(DEV)  # k and v as views of a fused projection
    k, v = qkv[:, hkv:2 * hkv], qkv[:, 2 * hkv:]
    want = [t.clone() for t in (kc, vc, kmin, kmax, gen)]
    gen_before = gen.clone()
    write_kv(k, v, want[0], want[1], slots)
    update_page_minmax(k, slots, want[2], want[3], bs)
    want[4].index_add_(0, slots // bs, (slots % bs == 0).to(torch.int32))
    write_kv_minmax_decode(k, v, kc, vc, slots, kmin, kmax, gen if with_gen else None)
    for got, w in zip((kc, vc, kmin, kmax), want):
        assert torch.equal(got, w)
    assert torch.equal(gen, want[4] if with_gen else gen_before)
    assert not torch.equal(want[4], gen_before)  # two tokens start blocks: the generations moved
