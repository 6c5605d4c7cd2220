#!/usr/bin/env python3
"""Golden files for kernels-wasm, from llama.cpp (PyPI llama-cpp-python) on the same GGUF.

    golden/tokenizer-smollm2.json   token ids of many strings (llama.cpp's tokenizer, special=True)
    golden/greedy-smollm2.json      64 greedy steps on each prompt: token ids + top-16 logits/step

CI never runs this (it builds llama.cpp from source: minutes). Run once, commit the JSON:

    python3 -m venv /tmp/llamaref && /tmp/llamaref/bin/pip install llama-cpp-python==0.3.36 tokenizers==0.23.3 gguf numpy
    /tmp/llamaref/bin/python kernels-wasm/scripts/gen_golden.py models/smollm2-135m-instruct-q4_1.gguf

HF `tokenizers` (built from the GGUF vocab/merges with SmolLM2's pre-tokenizer: Digits then
ByteLevel) is run as a second reference; disagreements are printed, the golden is llama.cpp's.
"""
import json
import sys
from pathlib import Path

import numpy as np
import llama_cpp
import llama_cpp.llama
from llama_cpp import Llama

# This machine's CPU reports AMX but executing AMX tiles raises SIGILL here, and GGML_NATIVE
# builds pick the AMX weight buffers. Plain CPU buffers (use_extra_bufts=false) run the generic
# AVX-512/AVX2 q4_1 x q8_1 dot products instead: the same numbers llama.cpp computes elsewhere.
_default_params = llama_cpp.llama_model_default_params


def _params_without_extra_bufts():
    p = _default_params()
    p.use_extra_bufts = False
    return p


llama_cpp.llama_model_default_params = _params_without_extra_bufts
llama_cpp.llama.llama_cpp.llama_model_default_params = _params_without_extra_bufts

STEPS = 64
TOPK = 16
HERE = Path(__file__).resolve().parent.parent

STRINGS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "multiple\n\nnewlines\n\n\n and\ttabs\t\there",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "const x = {a: 1, b: [2, 3]}; // comment\nconsole.log(x?.a ?? 0);",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 1,000,000",
    "Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "CJK: 你好，世界！日本語のテキスト。한국어 문장입니다.",
    "Combining: e\u0301 a\u0300 n\u0303 Å vs A\u030a, Zalgo: Z\u0351\u034a\u0310a\u0313l\u0350g\u0341o",
    "Arabic: مرحبا بالعالم. Hebrew: שלום עולם. Hindi: नमस्ते दुनिया",
    "Russian: Привет, мир! Greek: Γειά σου Κόσμε",
    "don't won't I'm you're they've we'll she'd IT'S",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "special in text: <|endoftext|> and <file_sep> mid-sentence",
    "   ",
    "\n",
    "a",
    "",
    "URL: https://example.com/path?query=1&b=two#frag and email a.b@c.io",
    "Math: ∑_{i=1}^{n} x_i² ≤ √(n·∑x_i⁴) ∞ ≠ ≈ ±",
    "Mixed123abc456DEF 7x8=56 v2.0.1-beta+build.5",
    "tabs\tand\u00a0nbsp\u2003em-space\u3000ideographic",
    "SHOUTING AND whispering AnD CaMeLcAsE snake_case kebab-case",
    "Ünïcödé àccents çà et là — “quotes” ‘single’ …",
    "```python\nimport numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n```",
    "💩" * 5 + "ab" + "🙂" * 3,
    "Line with trailing spaces   \nnext line",
]

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a neural network is in one paragraph.",
    "List three prime numbers.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a short recipe for pancakes.",
    "Who wrote Romeo and Juliet?",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "Tell me a joke about computers.",
    "Summarize the plot of Cinderella in two sentences.",
]


def chatml(user: str) -> str:
    # The GGUF's chat template for one user message with add_generation_prompt (the TS test
    # renders it with @huggingface/jinja and must produce the same ids).
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def hf_tokenizer(gguf_path: str):
    from gguf import GGUFReader
    from tokenizers import Tokenizer, models, pre_tokenizers, AddedToken
    r = GGUFReader(gguf_path)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in r.fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, types) if ty == 3])
    return tok


def main() -> None:
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else str(HERE.parent / "models/smollm2-135m-instruct-q4_1.gguf")
    out = HERE / "golden"
    out.mkdir(exist_ok=True)

    vocab = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    hf = hf_tokenizer(gguf_path)
    cases = []
    for s in STRINGS:
        ids = vocab.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        hf_ids = hf.encode(s).ids
        if hf_ids != ids:
            print(f"note: HF tokenizers differs from llama.cpp on {s!r}:\n  llama.cpp {ids}\n  hf        {hf_ids}")
        cases.append({"text": s, "ids": ids})
    (out / "tokenizer-smollm2.json").write_text(json.dumps({
        "source": "llama.cpp (llama-cpp-python 0.3.36) tokenize(special=True, add_bos=False)",
        "cases": cases}, ensure_ascii=False, indent=1))
    print(f"tokenizer: {len(cases)} strings")

    llm = Llama(model_path=gguf_path, n_ctx=512, n_batch=512, n_threads=1, logits_all=False, verbose=False)
    runs = []
    for p in PROMPTS:
        text = chatml(p)
        prompt = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        # One llama_decode per prompt token: every position then runs llama.cpp's single-token
        # kernels (the runtime's prefill is token by token too). A batched prompt would run
        # K·q and P·V through llamafile's tinyBLAS instead, which sums in another order, and a
        # quantized model's greedy path is chaotic under such last-bit differences.
        for t in prompt:
            llm.eval([t])
        toks, tops = [], []
        for _ in range(STEPS):
            # The last evaluated position's logits (llm.scores is not filled without logits_all).
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)).astype(np.float32)
            top = np.argsort(-logits, kind="stable")[:TOPK]
            t = int(top[0])
            toks.append(t)
            tops.append({"ids": [int(i) for i in top], "logits": [round(float(logits[i]), 4) for i in top]})
            llm.eval([t])
        runs.append({"user": p, "promptIds": prompt, "tokens": toks, "top": tops})
        print(f"greedy: {p!r} -> {llm.detokenize(toks)[:60]!r}", flush=True)
    (out / "greedy-smollm2.json").write_text(json.dumps({
        "source": "llama.cpp (llama-cpp-python 0.3.36), CPU (x86, AVX-512), n_ctx=512, prompt one token per decode, greedy, no stop on EOG",
        "system": SYSTEM, "steps": STEPS, "runs": runs}, ensure_ascii=False))


if __name__ == "__main__":
    main()
