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
  // Per-token buffers hold `batch` tokens (batched prefill; prefillBatch in RuntimeOptions),
  // token j at j × (one token's size); decode (forward) uses token 0.
  batch: number;
  x: number;      // f32 (batch, dim)        residual stream
  xb: number;     // f32 (batch, dim)        normed input / attention output
  xb2: number;    // f32 (batch, dim)        projection output
  q: number;      // f32 (batch, nHeads · headDim)
  k: number;      // f32 (batch, nKV · headDim)
  v: number;      // f32 (batch, nKV · headDim)
  hb: number;     // f32 (batch, hidden)     gate, then silu(gate)·up
  hb2: number;    // f32 (batch, hidden)     up
  // quantized activations of one n-long input per token, token j at j × n (elements): n is dim
  // or hidden, whichever the next matvec reads
  aq: number;     // i8  (batch, max(dim, hidden))       quantized activations
  a16: number;    // i16 (batch, max(dim, hidden))       the same, widened
  a16p: number;   // i16 (batch, max(dim, hidden))       widened, permuted for SIMD128 Q4 (quantize.ts)
  ad: number;     // f32 (batch, max(dim, hidden) / 32)  their block scales
  as: number;     // f32 (batch, max(dim, hidden) / 32)  d · Σq per block
  logits: number; // f32 (vocab)
  scores: number; // f32 (kvCapacity) attention scratch
  kc: number;     // f16 (layers, kvCapacity, nKV · headDim)
  vc: number;     // f16 (layers, kvCapacity, nKV · headDim)
  kvLayerBytes: number;
  weights: number; // u8 (dataBytes): the GGUF tensor-data section
  dataBytes: number;
  end: number;
}

export function planLayout(k: KernelExports, cfg: ModelConfig, header: GGUFHeader, kvCapacity: number, batch = 1): Layout {
  let at = Math.ceil(k.heap_base() / 64) * 64 + SELF_CHECK_BYTES;
  const take = (bytes: number) => { const p = at; at = Math.ceil((at + bytes) / 64) * 64; return p; };
  const kvDim = cfg.nKVHeads * cfg.headDim;
  const maxIn = Math.max(cfg.dim, cfg.hiddenDim);
  const dataBytes = Math.max(...header.tensors.map((t) => t.offset + t.byteLength));
  const kvLayerBytes = kvCapacity * kvDim * 2;
  const B = batch;
  const l: Layout = {
    batch,
    x: take(B * cfg.dim * 4), xb: take(B * cfg.dim * 4), xb2: take(B * cfg.dim * 4),
    q: take(B * cfg.dim * 4), k: take(B * kvDim * 4), v: take(B * kvDim * 4),
    hb: take(B * cfg.hiddenDim * 4), hb2: take(B * cfg.hiddenDim * 4),
    aq: take(B * maxIn), a16: take(B * maxIn * 2), a16p: take(B * maxIn * 2), ad: take(B * (maxIn / 32) * 4), as: take(B * (maxIn / 32) * 4),
    logits: take(cfg.vocabSize * 4), scores: take(kvCapacity * 4),
    kc: take(cfg.nLayers * kvLayerBytes), vc: take(cfg.nLayers * kvLayerBytes), kvLayerBytes,
    weights: take(dataBytes), dataBytes, end: 0,
  };
  l.end = at;
  const have = k.memory.buffer.byteLength;
  if (l.end > have) k.memory.grow(Math.ceil((l.end - have) / 65536));
  return l;
}
