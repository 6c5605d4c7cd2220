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
