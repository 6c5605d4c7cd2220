// Bundled by bench/tokenize_long_text.mjs: today's tokenizer and the BPE loop it replaced.
export { Tokenizer } from "../../kernels-wasm/src/tokenizer/index";
export { BPEModel } from "../../kernels-wasm/src/tokenizer/bpe";
export { preTokenizerFor } from "../../kernels-wasm/src/tokenizer/pre-tokenizer";
export { BPEModel as RescanBPEModel } from "../../.cache/bench-tokenize/rescan-bpe";
