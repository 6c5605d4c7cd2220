#!/usr/bin/env python3
"""A random-weight llama GGUF with the 15M shape of llama2.c's stories15M (dim 288, 6 layers,
6 heads, hidden 768, vocab 32000; Q4_1 matrices, Q8_0 embeddings, as SmolLM2's GGUF) for
bench/wasm_bench.mjs. The vocabulary and merges are SmolLM2's first 32000 tokens so llama.cpp
(wllama) can load it too. Output: .cache/bench/tiny15m-q4_1.gguf (ignored by git).

    .venv/bin/python bench/wasm_tiny_gguf.py
"""
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType
from gguf.quants import quantize

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "models/smollm2-135m-instruct-q4_1.gguf"
OUT = ROOT / ".cache/bench/tiny15m-q4_1.gguf"
DIM, LAYERS, HEADS, HIDDEN, VOCAB = 288, 6, 6, 768, 32000


def main() -> None:
    src = GGUFReader(str(SRC))
    tokens = src.fields["tokenizer.ggml.tokens"].contents()[:VOCAB]
    types = src.fields["tokenizer.ggml.token_type"].contents()[:VOCAB]
    vocab = set(tokens)
    merges = [m for m in src.fields["tokenizer.ggml.merges"].contents() if m.replace(" ", "") in vocab and all(p in vocab for p in m.split(" "))]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(OUT), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(2048)
    w.add_embedding_length(DIM)
    w.add_feed_forward_length(HIDDEN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(DIM // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def mat(name: str, rows: int, cols: int, qt: GGMLQuantizationType) -> None:
        a = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        w.add_tensor(name, quantize(a, qt), raw_shape=quantize(a, qt).shape, raw_dtype=qt)

    mat("token_embd.weight", VOCAB, DIM, GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(DIM, dtype=np.float32))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(DIM, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(DIM, dtype=np.float32))
        for n, r, c in [("attn_q", DIM, DIM), ("attn_k", DIM, DIM), ("attn_v", DIM, DIM), ("attn_output", DIM, DIM),
                        ("ffn_gate", HIDDEN, DIM), ("ffn_up", HIDDEN, DIM), ("ffn_down", DIM, HIDDEN)]:
            mat(p + n + ".weight", r, c, GGMLQuantizationType.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
