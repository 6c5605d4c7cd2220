/** Where each tensor of a llama GGUF sits in WASM memory, with its ggml type id and shape. */
import type { GGUFHeader, GGUFTensorInfo } from "../gguf/reader";
import type { GGMLTypeName } from "../gguf/types";
import type { ModelConfig } from "./config";

export const TYPE_ID: Record<GGMLTypeName, number> = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8 };

export interface Tensor {
  ptr: number;
  type: GGMLTypeName;
  /** (rows, cols) = (shape[1], shape[0]) for matrices. */
  rows: number;
  cols: number;
}

export interface LayerWeights {
  attnNorm: Tensor; wq: Tensor; wk: Tensor; wv: Tensor; wo: Tensor;
  ffnNorm: Tensor; wGate: Tensor; wUp: Tensor; wDown: Tensor;
}

export interface Weights {
  tokenEmbd: Tensor;
  outputNorm: Tensor;
  /** The output projection; token_embd when tied (SmolLM2). */
  output: Tensor;
  layers: LayerWeights[];
}

export function mapWeights(header: GGUFHeader, cfg: ModelConfig, base: number): Weights {
  const byName = new Map<string, GGUFTensorInfo>(header.tensors.map((t) => [t.name, t]));
  const get = (name: string, rows: number, cols: number): Tensor => {
    const t = byName.get(name);
    if (!t) throw new Error(`GGUF has no tensor ${name}`);
    const [c, r = 1] = t.shape;
    if (c !== cols || r !== rows) throw new Error(`tensor ${name}: shape [${t.shape}] but expected (rows ${rows}, cols ${cols})`);
    if (rows > 1 && t.type !== "F32" && t.type !== "F16" && cols % 32 !== 0) throw new Error(`tensor ${name}: cols ${cols} not a multiple of 32`);
    if (rows === 1 && t.type !== "F32") throw new Error(`tensor ${name}: norm weights must be F32, got ${t.type}`);
    return { ptr: base + t.offset, type: t.type, rows, cols };
  };
  const { dim, hiddenDim, nKVHeads, headDim, vocabSize } = cfg;
  const kvDim = nKVHeads * headDim;
  const tokenEmbd = get("token_embd.weight", vocabSize, dim);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `blk.${i}.`;
    layers.push({
      attnNorm: get(p + "attn_norm.weight", 1, dim),
      wq: get(p + "attn_q.weight", dim, dim),
      wk: get(p + "attn_k.weight", kvDim, dim),
      wv: get(p + "attn_v.weight", kvDim, dim),
      wo: get(p + "attn_output.weight", dim, dim),
      ffnNorm: get(p + "ffn_norm.weight", 1, dim),
      wGate: get(p + "ffn_gate.weight", hiddenDim, dim),
      wUp: get(p + "ffn_up.weight", hiddenDim, dim),
      wDown: get(p + "ffn_down.weight", dim, hiddenDim),
    });
  }
  return {
    tokenEmbd,
    outputNorm: get("output_norm.weight", 1, dim),
    output: byName.has("output.weight") ? get("output.weight", vocabSize, dim) : tokenEmbd,
    layers,
  };
}
