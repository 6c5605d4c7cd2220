"""Bucket choice of the decode CUDA graphs (engine/cuda_graphs.py); pure host logic, CPU only."""

import pytest

from edgeserve_pod.engine.cuda_graphs import _buckets, pick, make_width_buckets


def test_triton_width_buckets_are_coarse_and_end_at_max():
    assert make_width_buckets(512, 8, 4) == [8, 32, 128, 512]
    assert make_width_buckets(2048, 8, 4) == [8, 32, 128, 512, 2048]
    assert make_width_buckets(100, 8, 4) == [8, 32, 100]
    assert make_width_buckets(5, 8, 4) == [5]


def test_torch_width_buckets_are_powers_of_two():
    assert make_width_buckets(512, 4, 2) == [4, 8, 16, 32, 64, 128, 256, 512]
    assert make_width_buckets(300, 4, 2) == [4, 8, 16, 32, 64, 128, 256, 300]


def test_pick_takes_smallest_covering_bucket():
    w = make_width_buckets(512, 8, 4)
    # block-table width of the batch's longest context (block size 16): 32 tokens -> 2 blocks
    assert pick(w, 1) == 8
    assert pick(w, 2) == 8
    assert pick(w, 8) == 8
    assert pick(w, 9) == 32
    assert pick(w, 129) == 512
    assert pick(w, 512) == 512
    with pytest.raises(ValueError, match="exceeds"):
        pick(w, 513)


def test_batch_buckets_and_pick():
    bs = _buckets(64, [1, 2, 4, 8], 8)
    assert bs == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert [pick(bs, n) for n in (1, 3, 5, 9, 17, 63, 64)] == [1, 4, 8, 16, 24, 64, 64]


def test_bad_bucket_arguments_raise():
    for args in ((0, 8, 4), (512, 0, 4), (512, 8, 1)):
        with pytest.raises(ValueError):
            make_width_buckets(*args)


def test_decode_graphs_refuse_steps_with_overrides_when_the_backend_uses_them():
    """A sparse step whose request overrides Quest (budget, reselect_every, off) must not replay a
    graph captured with the model defaults."""
    import torch

    from edgeserve_pod.engine.cuda_graphs import DecodeGraphs
    from edgeserve_pod.engine.step_inputs import StepInputs

    def step(overrides):
        return StepInputs(input_ids=torch.zeros(1, dtype=torch.int64), positions=torch.zeros(1, dtype=torch.int64),
                          slot_mapping=torch.zeros(1, dtype=torch.int64), num_prefill_tokens=0, num_decode_tokens=1,
                          cu_seqlens_q=[0], cu_seqlens_k=[0], prefill_block_tables=None,
                          decode_block_tables=torch.zeros(1, 2, dtype=torch.int32),
                          decode_context_lens=torch.ones(1, dtype=torch.int32),
                          logits_indices=torch.zeros(1, dtype=torch.int64), overrides=overrides)

    for ok in (True, False):
        g = DecodeGraphs(None, None, None, 4, 8, 9, 16, torch.device("cpu"), width_buckets=False, overrides_ok=ok)
        assert g.supports(step([None]))
        assert g.supports(step([{"token_budget": 512}])) == ok
