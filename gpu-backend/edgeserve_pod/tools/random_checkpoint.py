"""Write an HF-layout checkpoint (config.json + model.safetensors) with random weights and real
shapes, for benchmarks and tests.

    python -m edgeserve_pod.tools.random_checkpoint --shape llama-3.2-1b --out /tmp/llama1b
"""

from __future__ import annotations

import argparse

import torch

from edgeserve_pod.models.hf_folder import save_hf_folder

_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}

SHAPES: dict[str, dict] = {
    "llama-3.2-1b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE, max_position_embeddings=131072,
                         tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    "llama-3.1-8b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                         rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling={**_LLAMA3_ROPE, "factor": 8.0},
                         max_position_embeddings=131072, tie_word_embeddings=False, bos_token_id=128000,
                         eos_token_id=[128001, 128008, 128009]),
    "qwen2.5-7b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768, tie_word_embeddings=False,
                       bos_token_id=151643, eos_token_id=151645),
    # Small enough for CI on 2 cores; GQA (4 q heads per KV head) like the real models.
    "tiny": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
                 rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=1024, tie_word_embeddings=False,
                 bos_token_id=1, eos_token_id=2),
    "tiny-qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=1024, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2),
}


def write_random_checkpoint(shape: str, out: str, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                            device: str = "cpu") -> str:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    c = dict(SHAPES[shape], torch_dtype=str(dtype).removeprefix("torch."))
    g = torch.Generator(device=device).manual_seed(seed)
    D, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or D // H
    qwen = c["model_type"] == "qwen2"

    def w(*shape_, std=None):  # scaled like a trained model so activations stay O(1)
        std = std if std is not None else shape_[-1] ** -0.5
        return (torch.randn(*shape_, generator=g, device=device) * std).to(dtype).cpu()

    t = {"model.embed_tokens.weight": w(V, D, std=1.0), "model.norm.weight": (1 + 0.1 * w(D, std=1.0).float()).to(dtype)}
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = w(V, D)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(H * d, D)
        t[p + "self_attn.k_proj.weight"] = w(Hkv * d, D)
        t[p + "self_attn.v_proj.weight"] = w(Hkv * d, D)
        t[p + "self_attn.o_proj.weight"] = w(D, H * d)
        if qwen:
            t[p + "self_attn.q_proj.bias"] = w(H * d, std=0.1)
            t[p + "self_attn.k_proj.bias"] = w(Hkv * d, std=0.1)
            t[p + "self_attn.v_proj.bias"] = w(Hkv * d, std=0.1)
        t[p + "mlp.gate_proj.weight"] = w(I, D)
        t[p + "mlp.up_proj.weight"] = w(I, D)
        t[p + "mlp.down_proj.weight"] = w(D, I)
        t[p + "input_layernorm.weight"] = (1 + 0.1 * w(D, std=1.0).float()).to(dtype)
        t[p + "post_attention_layernorm.weight"] = (1 + 0.1 * w(D, std=1.0).float()).to(dtype)
    return save_hf_folder(out, t, c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cpu", help="where to draw the random numbers (cuda is much faster for 8B)")
    a = ap.parse_args()
    print(write_random_checkpoint(a.shape, a.out, a.seed, getattr(torch, a.dtype), a.device))


if __name__ == "__main__":
    main()
