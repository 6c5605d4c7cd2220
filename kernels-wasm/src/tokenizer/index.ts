export { Tokenizer, type ChatMessage, type DecodeOptions, type EncodeOptions } from "./tokenizer";
export type { StreamDecoder } from "./stream-decoder";
export { tokenizerDataFromGGUF, validateTokenizerData, TOKENIZER_FORMAT, type TokenizerData } from "./data";
