"""Dequantize a Llama-architecture GGUF (e.g. SmolLM2-135M-Instruct Q4_1) into an HF folder:
config.json + model.safetensors, loadable by this engine and by transformers.

    python -m edgeserve_pod.tools.gguf_to_hf models/smollm2-135m-instruct-q4_1.gguf models/smollm2-135m-instruct-hf

llama.cpp's converter permutes the rows of Q and K (interleaved rotary pairs); this undoes it
so the result uses HF's rotate-half layout.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from edgeserve_pod.models.hf_folder import save_hf_folder

_LAYER_NAMES = {
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's permute: (out, in) rows from interleaved pairs to rotate-half halves."""
    out, inp = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def convert(gguf_path: str, out_dir: str, dtype: torch.dtype = torch.bfloat16) -> str:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(gguf_path)
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{gguf_path}: architecture {arch!r} is not supported (llama only)")
    p = "llama."
    H, Hkv = meta[p + "attention.head_count"], meta[p + "attention.head_count_kv"]
    D = meta[p + "embedding_length"]
    vocab = meta.get(p + "vocab_size") or len(r.fields["tokenizer.ggml.tokens"].data)
    tensors: dict[str, torch.Tensor] = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)  # numpy order: (rows, cols)
        name = t.name
        if name == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            hf = "model.norm.weight"
        elif name == "output.weight":
            hf = "lm_head.weight"
        elif name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            if rest not in _LAYER_NAMES:
                raise ValueError(f"{gguf_path}: unexpected tensor {name}")
            hf = f"model.layers.{i}.{_LAYER_NAMES[rest]}"
            if rest == "attn_q.weight":
                w = unpermute(w, H)
            elif rest == "attn_k.weight":
                w = unpermute(w, Hkv)
        else:
            raise ValueError(f"{gguf_path}: unexpected tensor {name}")
        tensors[hf] = torch.from_numpy(np.ascontiguousarray(w)).to(dtype)
    tied = "lm_head.weight" not in tensors
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": D, "intermediate_size": meta[p + "feed_forward_length"],
        "num_hidden_layers": meta[p + "block_count"], "num_attention_heads": H, "num_key_value_heads": Hkv,
        "head_dim": D // H, "vocab_size": vocab, "rms_norm_eps": float(meta[p + "attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta.get(p + "rope.freq_base", 10000.0)), "max_position_embeddings": meta[p + "context_length"],
        "tie_word_embeddings": tied, "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"), "torch_dtype": str(dtype).removeprefix("torch."),
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
    }
    return save_hf_folder(out_dir, tensors, config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    a = ap.parse_args()
    print(convert(a.gguf, a.out, getattr(torch, a.dtype)))


if __name__ == "__main__":
    main()
