"""The fused decode path of the decoder layer (models/llama.py with kernels/gemv.py: RMSNorm and
SiLU*up prologues, residual epilogues) gives the tokens of the unfused layer. On CPU the GEMV
kernels run through the Triton interpreter; on a GPU natively (where fused_ok picks the path)."""

import torch

import edgeserve_pod.kernels.gemv as gemv_mod
from conftest import greedy, make_engine, run_all
from edgeserve_pod.models.llama import DecoderLayer


def test_fused_layers_give_the_unfused_tokens(tiny_model, monkeypatch):
    prompts = {"a": [5, 9, 23], "b": [11, 2]}
    eng = make_engine(tiny_model)
    for rid, p in prompts.items():
        eng.add_request(rid, p, greedy(6))
    want = run_all(eng)

    calls = []
    real = gemv_mod.gemv

    def counting(*a, **kw):
        calls.append(kw.get("prologue"))
        return real(*a, **kw)

    monkeypatch.setattr(gemv_mod, "gemv", counting)
    # wide tiles: few interpreted programs per call (the tiny model's N is 64..192)
    monkeypatch.setattr(gemv_mod, "pick_config", lambda n, k: gemv_mod._cfg(64, 64, 4, 1))
    # on CPU fused_ok says no (not CUDA): ask for the fused path wherever the batch is small enough
    monkeypatch.setattr(DecoderLayer, "fused_ok", lambda self, x: x.shape[0] <= 4)
    eng = make_engine(tiny_model)
    for rid, p in prompts.items():
        eng.add_request(rid, p, greedy(6))
    got = run_all(eng)
    assert got == want
    layers = len(eng.runner.model.layers)
    assert calls.count("silu_mul") >= 5 and None in calls
    # per fused step: qkv and gate_up per layer, and the lm_head with the final norm
    assert calls.count("rmsnorm") == (2 * layers + 1) * calls.count("silu_mul") // layers
    assert torch.is_tensor(eng.runner.model.layers[0].qkv_proj.weight)
