/**
 * Model and runtime configuration: one typed object each, validated once at the boundary.
 */
import type { GGUFHeader, GGUFValue } from "../gguf/reader";

/** Llama-architecture shape, read from GGUF metadata. */
export interface ModelConfig {
  arch: "llama";
  nLayers: number;
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  vocabSize: number;
  contextLength: number;
  ropeBase: number;
  rmsEps: number;
}

/** StreamingLLM KV: the first `sinkTokens` positions are kept forever, then the most recent
 *  `windowTokens`. Memory is (sink + window) × layers × 2 × kvDim × 2 bytes (f16). */
export interface RuntimeOptions {
  sinkTokens: number;
  windowTokens: number;
  /** Prompt tokens per batched prefill step (Model.prefill): each weight block is read once per
   *  step. Activation memory grows with it (~31 KB per token for SmolLM2-135M). */
  prefillBatch: number;
}

export const DEFAULT_RUNTIME_OPTIONS: RuntimeOptions = { sinkTokens: 4, windowTokens: 1020, prefillBatch: 16 };

function int(md: Record<string, GGUFValue>, key: string, fallback?: number): number {
  const v = md[key] ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new Error(`GGUF ${key}: expected a positive integer, got ${String(v)}`);
  }
  return v;
}

export function modelConfigFromGGUF(h: GGUFHeader): ModelConfig {
  const md = h.metadata;
  const arch = md["general.architecture"];
  if (arch !== "llama") throw new Error(`architecture ${JSON.stringify(arch)} is not supported (expected "llama")`);
  const dim = int(md, "llama.embedding_length");
  const nHeads = int(md, "llama.attention.head_count");
  const nKVHeads = int(md, "llama.attention.head_count_kv", nHeads);
  const headDim = dim / nHeads;
  const tokens = md["tokenizer.ggml.tokens"];
  const cfg: ModelConfig = {
    arch: "llama",
    nLayers: int(md, "llama.block_count"),
    dim,
    hiddenDim: int(md, "llama.feed_forward_length"),
    nHeads,
    nKVHeads,
    headDim,
    vocabSize: Array.isArray(tokens) ? tokens.length : int(md, "llama.vocab_size"),
    contextLength: int(md, "llama.context_length"),
    ropeBase: Number(md["llama.rope.freq_base"] ?? 10000),
    rmsEps: Number(md["llama.attention.layer_norm_rms_epsilon"] ?? 1e-5),
  };
  if (!Number.isInteger(headDim) || headDim % 4 !== 0) throw new Error(`head dim ${headDim} must be an integer multiple of 4`);
  // assembly/attention.ts: the P·V accumulators are 64 × 256 floats (it traps above)
  if (headDim > 256) throw new Error(`head dim ${headDim} is above 256, the most the attention kernel holds`);
  if (nHeads % nKVHeads !== 0) throw new Error(`head_count ${nHeads} is not a multiple of head_count_kv ${nKVHeads}`);
  if (dim % 32 !== 0 || cfg.hiddenDim % 32 !== 0) throw new Error(`dims ${dim}/${cfg.hiddenDim} must be multiples of 32`);
  const rd = md["llama.rope.dimension_count"];
  if (rd !== undefined && rd !== headDim) throw new Error(`partial RoPE (dimension_count ${String(rd)} ≠ head dim ${headDim}) is not supported`);
  return cfg;
}

export function validateRuntimeOptions(o: Partial<RuntimeOptions>): RuntimeOptions {
  const r = { ...DEFAULT_RUNTIME_OPTIONS, ...o } satisfies RuntimeOptions;
  if (!Number.isInteger(r.sinkTokens) || r.sinkTokens < 0) throw new Error(`sinkTokens must be an integer ≥ 0, got ${r.sinkTokens}`);
  if (!Number.isInteger(r.windowTokens) || r.windowTokens < 1) throw new Error(`windowTokens must be an integer ≥ 1, got ${r.windowTokens}`);
  if (!Number.isInteger(r.prefillBatch) || r.prefillBatch < 1 || r.prefillBatch > 256) throw new Error(`prefillBatch must be an integer in [1, 256], got ${r.prefillBatch}`);
  return r;
}
