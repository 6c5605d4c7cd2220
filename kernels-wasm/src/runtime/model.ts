/**
 * A llama-architecture model in one WASM memory: `forward(token, pos)` → logits.
 * Reads top to bottom like llama2.c's run.c; no allocation in the step.
 */
import type { GGUFHeader } from "../gguf/reader";
import { modelConfigFromGGUF, validateRuntimeOptions, type ModelConfig, type RuntimeOptions } from "./config";
import type { KernelExports, Kernels } from "./kernels";
import { StreamingKV } from "./kv-cache";
import { planLayout, type Layout } from "./layout";
import { mapWeights, TYPE_ID, type Tensor, type Weights } from "./weights";

export class Model {
  readonly cfg: ModelConfig;
  readonly opts: RuntimeOptions;
  readonly kv: StreamingKV;
  readonly layout: Layout;
  readonly weights: Weights;
  private readonly k: KernelExports;
  private logitsView: Float32Array;
  /** Activation layout the 4-bit kernels of this build read. */
  private readonly q4Act: number;

  constructor(readonly kernels: Kernels, readonly header: GGUFHeader, options: Partial<RuntimeOptions> = {}) {
    this.cfg = modelConfigFromGGUF(header);
    this.opts = validateRuntimeOptions(options);
    this.kv = new StreamingKV(this.opts);
    this.k = kernels.k;
    this.layout = planLayout(this.k, this.cfg, header, this.kv.capacity);
    this.weights = mapWeights(header, this.cfg, this.layout.weights);
    this.q4Act = kernels.variant === "relaxed" ? this.layout.aq : this.layout.a16p;
    this.logitsView = new Float32Array(this.k.memory.buffer, this.layout.logits, this.cfg.vocabSize);
  }

  /** The region the GGUF tensor-data section is copied into (the loader fills it). */
  weightBytes(): Uint8Array {
    return new Uint8Array(this.k.memory.buffer, this.layout.weights, this.layout.dataBytes);
  }

  /** Runs one token at position `pos`; returns a view of the logits (vocab), valid until the next call. */
  forward(token: number, pos: number): Float32Array {
    const { k, cfg, layout: L, weights: W } = this;
    const { dim, hiddenDim, nHeads, nKVHeads, headDim } = cfg;
    const kvDim = nKVHeads * headDim;
    const slot = this.kv.slot(pos);
    const nValid = this.kv.valid(pos);
    const scale = 1 / Math.sqrt(headDim);

    k.get_row(W.tokenEmbd.ptr, TYPE_ID[W.tokenEmbd.type], token, dim, L.x);
    for (let l = 0; l < cfg.nLayers; l++) {
      const lw = W.layers[l];
      const kc = L.kc + l * L.kvLayerBytes, vc = L.vc + l * L.kvLayerBytes;
      // attention
      k.rmsnorm(L.x, lw.attnNorm.ptr, L.xb, dim, cfg.rmsEps);
      this.quantize(L.xb, dim);
      this.matvec(lw.wq, L.xb, L.q);
      this.matvec(lw.wk, L.xb, L.k);
      this.matvec(lw.wv, L.xb, L.v);
      k.rope(L.q, nHeads, headDim, pos, cfg.ropeBase);
      k.rope(L.k, nKVHeads, headDim, pos, cfg.ropeBase);
      k.f32_to_f16_row(L.k, kc + slot * kvDim * 2, kvDim);
      k.f32_to_f16_row(L.v, vc + slot * kvDim * 2, kvDim);
      k.round_f16_row(L.q, dim); // llama.cpp computes K·q in f16
      if (headDim % 8 === 0) k.attention_fast(L.q, kc, vc, nValid, nHeads, nKVHeads, headDim, scale, L.scores, L.xb, L.qs);
      else k.attention(L.q, kc, vc, nValid, nHeads, nKVHeads, headDim, scale, L.scores, L.xb);
      this.quantize(L.xb, dim);
      this.matvec(lw.wo, L.xb, L.xb2);
      k.add_inplace(L.x, L.xb2, dim);
      // feed-forward: down(silu(gate(x)) · up(x))
      k.rmsnorm(L.x, lw.ffnNorm.ptr, L.xb, dim, cfg.rmsEps);
      this.quantize(L.xb, dim);
      this.matvec(lw.wGate, L.xb, L.hb);
      this.matvec(lw.wUp, L.xb, L.hb2);
      k.silu_mul(L.hb, L.hb2, hiddenDim);
      this.quantize(L.hb, hiddenDim);
      this.matvec(lw.wDown, L.hb, L.xb2);
      k.add_inplace(L.x, L.xb2, dim);
    }
    k.rmsnorm(L.x, W.outputNorm.ptr, L.xb, dim, cfg.rmsEps);
    this.quantize(L.xb, dim);
    this.matvec(W.output, L.xb, L.logits);
    return this.logitsView;
  }

  /** The greedy token of the last forward()'s logits: the lowest index on ties, as argmax(). */
  greedy(): number {
    return this.k.argmax_f32(this.layout.logits, this.cfg.vocabSize);
  }

  /** Activations x (f32) → int8 blocks in aq/ad/as, for the quantized matvecs. */
  private quantize(x: number, n: number): void {
    const L = this.layout;
    this.k.quantize_q8(x, n, L.aq, L.a16, L.a16p, L.ad, L.as);
  }

  /** out (rows) = W · x; quantized W reads the int8 copy of x made by quantize(x). */
  private matvec(w: Tensor, x: number, out: number): void {
    const { k, layout: L } = this;
    switch (w.type) {
      case "Q4_1": return k.matvec_q4_1_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out);
      case "Q4_0": return k.matvec_q4_0_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out);
      case "Q8_0": return k.matvec_q8_0_x4(w.ptr, w.rows, w.cols, L.a16, L.ad, out);
      case "F32": return k.matvec_f32(w.ptr, w.rows, w.cols, x, out);
      case "F16": return k.matvec_f16(w.ptr, w.rows, w.cols, x, out);
    }
  }
}
