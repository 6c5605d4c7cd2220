export * from "./tokenizer/index";
export * from "./gguf/index";
export * from "./runtime/index";
