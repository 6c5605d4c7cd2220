/**
 * One WebAssembly memory, laid out once: activations, KV cache, then the GGUF tensor-data
 * section copied byte for byte (tensor i at `weights + info.offset`). The memory is grown once
 * here; nothing grows later, so typed-array views made after this stay valid.
 */
import type { GGUFHeader } from "../gguf/reader";
import type { ModelConfig } from "./config";
import type { KernelExports } from "./kernels";

export const SELF_CHECK_BYTES = 64 * 1024;

export interface Layout {
  x: number;      // f32 (dim)        residual stream
  xb: number;     // f32 (dim)        normed input / attention output
  xb2: number;    // f32 (dim)        projection output
  q: number;      // f32 (nHeads · headDim)
  k: number;      // f32 (nKV · headDim)
  v: number;      // f32 (nKV · headDim)
  hb: number;     // f32 (hidden)     gate, then silu(gate)·up
  hb2: number;    // f32 (hidden)     up
  aq: number;     // i8  (max(dim, hidden))       quantized activations
  a16: number;    // i16 (max(dim, hidden))       the same, widened
  a16p: number;   // i16 (max(dim, hidden))       widened, permuted for SIMD128 Q4 (quantize.ts)
  ad: number;     // f32 (max(dim, hidden) / 32)  their block scales
  as: number;     // f32 (max(dim, hidden) / 32)  d · Σq per block
  logits: number; // f32 (vocab)
  scores: number; // f32 (kvCapacity) attention scratch
  qs: number;     // f32 (headDim)    attention scratch: one head's query, rescaled
  kc: number;     // f16 (layers, kvCapacity, nKV · headDim)
  vc: number;     // f16 (layers, kvCapacity, nKV · headDim)
  kvLayerBytes: number;
  weights: number; // u8 (dataBytes): the GGUF tensor-data section
  dataBytes: number;
  end: number;
}

export function planLayout(k: KernelExports, cfg: ModelConfig, header: GGUFHeader, kvCapacity: number): Layout {
  let at = Math.ceil(k.heap_base() / 64) * 64 + SELF_CHECK_BYTES;
  const take = (bytes: number) => { const p = at; at = Math.ceil((at + bytes) / 64) * 64; return p; };
  const kvDim = cfg.nKVHeads * cfg.headDim;
  const maxIn = Math.max(cfg.dim, cfg.hiddenDim);
  const dataBytes = Math.max(...header.tensors.map((t) => t.offset + t.byteLength));
  const kvLayerBytes = kvCapacity * kvDim * 2;
  const l: Layout = {
    x: take(cfg.dim * 4), xb: take(cfg.dim * 4), xb2: take(cfg.dim * 4),
    q: take(cfg.dim * 4), k: take(kvDim * 4), v: take(kvDim * 4),
    hb: take(cfg.hiddenDim * 4), hb2: take(cfg.hiddenDim * 4),
    aq: take(maxIn), a16: take(maxIn * 2), a16p: take(maxIn * 2), ad: take((maxIn / 32) * 4), as: take((maxIn / 32) * 4),
    logits: take(cfg.vocabSize * 4), scores: take(kvCapacity * 4), qs: take(cfg.headDim * 4),
    kc: take(cfg.nLayers * kvLayerBytes), vc: take(cfg.nLayers * kvLayerBytes), kvLayerBytes,
    weights: take(dataBytes), dataBytes, end: 0,
  };
  l.end = at;
  const have = k.memory.buffer.byteLength;
  if (l.end > have) k.memory.grow(Math.ceil((l.end - have) / 65536));
  return l;
}
