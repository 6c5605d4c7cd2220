"""Shared fixtures: a tiny random checkpoint (fast) and the dequantized SmolLM2 (real weights)."""

from __future__ import annotations

import os

import torch

# Kernels run natively on a GPU and through the Triton interpreter elsewhere (set before triton is
# imported). On a GPU, float32 tl.dot would default to TF32; the tests compare float32 kernels to
# float32 references, so they ask for IEEE float32 dots.
if torch.cuda.is_available():
    os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")
else:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from edgeserve_pod.config import EngineConfig
from edgeserve_pod.engine.engine import LLMEngine
from edgeserve_pod.engine.sequence import SamplingParams
from edgeserve_pod.tools.random_checkpoint import write_random_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOLLM2_GGUF = os.path.join(REPO, "models", "smollm2-135m-instruct-q4_1.gguf")
SMOLLM2_HF = os.path.join(REPO, "models", "smollm2-135m-instruct-hf")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return write_random_checkpoint("tiny", str(tmp_path_factory.mktemp("tiny")), seed=0, dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> str:
    return write_random_checkpoint("tiny-qwen2", str(tmp_path_factory.mktemp("tiny-qwen2")), seed=1, dtype=torch.float32)


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real small model, dequantized once into models/ (ignored by git)."""
    if not os.path.isfile(os.path.join(SMOLLM2_HF, "model.safetensors")):
        if not os.path.isfile(SMOLLM2_GGUF):
            pytest.fail(f"{SMOLLM2_GGUF} is missing: run scripts/fetch-models.sh (make test does)")
        from edgeserve_pod.tools.gguf_to_hf import convert

        convert(SMOLLM2_GGUF, SMOLLM2_HF)
    return SMOLLM2_HF


def make_engine(model: str, **kw) -> LLMEngine:
    args = dict(model=model, device="cpu", kv_cache_blocks=128, max_num_batched_tokens=256, max_num_seqs=16)
    args.update(kw)
    return LLMEngine(EngineConfig(**args))


def run_all(engine: LLMEngine, max_steps: int = 10_000) -> dict[str, list[int]]:
    """Step until done; tokens per request id, and finish reasons under key (id, 'reason')."""
    out: dict = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return out
        for o in engine.step():
            out.setdefault(o.request_id, []).extend(o.new_token_ids)
            if o.finished:
                out[(o.request_id, "reason")] = o.finish_reason
                out[(o.request_id, "cached")] = o.num_cached_tokens
    if engine.has_unfinished() and max_steps >= 10_000:
        raise AssertionError("engine did not finish")
    return out


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=n, ignore_eos=True, **kw)
