// Bundled by bench/tokenize_long_text.mjs: today's tokenizer, the BPE loop it replaced (e244200)
// and the tokenizer of 60569f2 (string-keyed merges).
export { Tokenizer } from "../../kernels-wasm/src/tokenizer/index";
export { BPEModel } from "../../kernels-wasm/src/tokenizer/bpe";
export { preTokenizerFor } from "../../kernels-wasm/src/tokenizer/pre-tokenizer";
export { BPEModel as RescanBPEModel } from "../../.cache/bench-tokenize/rescan-bpe";
export { Tokenizer as PrevTokenizer } from "../../.cache/bench-tokenize/prev/kernels-wasm/src/tokenizer/index";
export { BPEModel as PrevBPEModel } from "../../.cache/bench-tokenize/prev/kernels-wasm/src/tokenizer/bpe";
