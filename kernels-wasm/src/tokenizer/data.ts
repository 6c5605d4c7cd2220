/**
 * The serialisable form of a tokenizer (what `export-tokenizer.mjs` writes to
 * `tokenizers/<model-id>.json` and what `Tokenizer.fromJSON` reads), and its builder from GGUF
 * metadata.
 */
import type { GGUFValue } from "../gguf/reader";

export const TOKENIZER_FORMAT = "edgeserve-tokenizer/1";

export interface TokenizerData {
  format: typeof TOKENIZER_FORMAT;
  /** GGUF `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece). */
  model: "gpt2" | "llama";
  /** GGUF `tokenizer.ggml.pre` (BPE only), e.g. "smollm". */
  pre: string;
  tokens: string[];
  /** 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
  tokenTypes: number[];
  merges: string[];
  scores: number[];
  bosTokenId: number | null;
  unkTokenId: number | null;
  /** Every end-of-generation token: eos, eot, eom and the usual chat end markers. */
  eosTokenIds: number[];
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  chatTemplate: string | null;
}

// llama.cpp also treats these texts as end of generation when they are control tokens.
const EOG_TEXTS = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<|eom_id|>", "</s>"];

function num(md: Record<string, GGUFValue>, key: string): number | null {
  const v = md[key];
  if (v === undefined) return null;
  if (typeof v !== "number") throw new Error(`GGUF ${key}: expected a number, got ${typeof v}`);
  return v;
}
function bool(md: Record<string, GGUFValue>, key: string, dflt: boolean): boolean {
  const v = md[key];
  return typeof v === "boolean" ? v : dflt;
}
function strings(md: Record<string, GGUFValue>, key: string): string[] {
  const v = md[key];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new Error(`GGUF ${key}: expected an array of strings`);
  return v as string[];
}

export function tokenizerDataFromGGUF(md: Record<string, GGUFValue>): TokenizerData {
  const model = md["tokenizer.ggml.model"];
  if (model !== "gpt2" && model !== "llama") {
    throw new Error(`tokenizer model ${JSON.stringify(model)} is not supported (expected "gpt2" or "llama")`);
  }
  const tokens = strings(md, "tokenizer.ggml.tokens");
  const types = md["tokenizer.ggml.token_type"];
  const tokenTypes = Array.isArray(types) ? (types as number[]) : tokens.map(() => 1);
  const scores = Array.isArray(md["tokenizer.ggml.scores"]) ? (md["tokenizer.ggml.scores"] as number[]) : [];
  const eos = new Set<number>();
  for (const k of ["eos", "eot", "eom"]) {
    const id = num(md, `tokenizer.ggml.${k}_token_id`);
    if (id !== null) eos.add(id);
  }
  tokens.forEach((t, i) => { if (tokenTypes[i] === 3 && EOG_TEXTS.includes(t)) eos.add(i); });
  const tmpl = md["tokenizer.chat_template"];
  return {
    format: TOKENIZER_FORMAT,
    model,
    pre: typeof md["tokenizer.ggml.pre"] === "string" ? (md["tokenizer.ggml.pre"] as string) : "default",
    tokens,
    tokenTypes,
    merges: model === "gpt2" ? strings(md, "tokenizer.ggml.merges") : [],
    scores: model === "llama" ? scores : [],
    bosTokenId: num(md, "tokenizer.ggml.bos_token_id"),
    unkTokenId: num(md, "tokenizer.ggml.unknown_token_id"),
    eosTokenIds: [...eos].sort((a, b) => a - b),
    addBos: bool(md, "tokenizer.ggml.add_bos_token", model === "llama"),
    addEos: bool(md, "tokenizer.ggml.add_eos_token", false),
    addSpacePrefix: bool(md, "tokenizer.ggml.add_space_prefix", model === "llama"),
    chatTemplate: typeof tmpl === "string" ? tmpl : null,
  };
}

/** Checks data read from JSON (R2, files) before use; the message says what is wrong. */
export function validateTokenizerData(d: unknown): TokenizerData {
  const o = d as Partial<TokenizerData>;
  if (!o || typeof o !== "object") throw new Error("tokenizer JSON: expected an object");
  if (o.format !== TOKENIZER_FORMAT) throw new Error(`tokenizer JSON: format ${JSON.stringify(o.format)}, expected "${TOKENIZER_FORMAT}"`);
  if (o.model !== "gpt2" && o.model !== "llama") throw new Error(`tokenizer JSON: model ${JSON.stringify(o.model)} not supported`);
  if (!Array.isArray(o.tokens) || o.tokens.length === 0) throw new Error("tokenizer JSON: tokens must be a non-empty array");
  if (!Array.isArray(o.tokenTypes) || o.tokenTypes.length !== o.tokens.length) throw new Error("tokenizer JSON: tokenTypes must match tokens in length");
  if (!Array.isArray(o.eosTokenIds)) throw new Error("tokenizer JSON: eosTokenIds must be an array");
  if (o.model === "gpt2" && !Array.isArray(o.merges)) throw new Error("tokenizer JSON: merges missing");
  if (o.model === "llama" && (!Array.isArray(o.scores) || o.scores.length !== o.tokens.length)) throw new Error("tokenizer JSON: scores must match tokens in length");
  return o as TokenizerData;
}
