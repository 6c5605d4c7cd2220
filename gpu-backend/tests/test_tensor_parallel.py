"""Tensor parallel over 2 CPU processes (gloo): same greedy tokens as one process."""

from __future__ import annotations

from conftest import greedy, make_engine, run_all


def test_tp2_gloo_matches_tp1(tiny_qwen2):
    ps = {"a": list(range(3, 40)), "b": list(range(5, 90)), "c": [9] * 17}
    outs = []
    for tp in (1, 2):
        eng = make_engine(tiny_qwen2, tensor_parallel_size=tp, max_num_batched_tokens=48)
        try:
            for rid, p in ps.items():
                eng.add_request(rid, p, greedy(10))
            outs.append({k: v for k, v in run_all(eng).items() if isinstance(k, str)})
        finally:
            eng.shutdown()
    assert outs[0] == outs[1] and all(len(v) == 10 for v in outs[0].values())
