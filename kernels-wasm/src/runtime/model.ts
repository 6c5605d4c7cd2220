/**
 * A llama-architecture model in one WASM memory: `forward(token, pos)` → logits, and
 * `prefill(tokens, pos)`, the same for a run of prompt tokens, batched (bit-identical logits).
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

  /**
   * The header is read here and not kept: its metadata (vocabulary, merges, chat template: ~4 MB
   * of JS heap for SmolLM2) would otherwise live as long as the model.
   */
  constructor(readonly kernels: Kernels, header: GGUFHeader, options: Partial<RuntimeOptions> = {}) {
    this.cfg = modelConfigFromGGUF(header);
    this.opts = validateRuntimeOptions(options);
    this.kv = new StreamingKV(this.opts);
    this.k = kernels.k;
    this.layout = planLayout(this.k, this.cfg, header, this.kv.capacity, this.opts.prefillBatch);
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
      this.attend(L.q, kc, vc, nValid, L.xb);
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

  /**
   * Runs prompt tokens at positions pos, pos+1, …; returns the last one's logits (a view, valid
   * until the next call). Equals forward() token by token, bit for bit, but batched: up to
   * prefillBatch tokens go through each layer together, so each weight tile is read once per
   * batch (matmat kernels), and the output matvec runs for the last token only.
   */
  prefill(tokens: ArrayLike<number>, pos: number): Float32Array {
    if (tokens.length === 0) throw new Error("prefill: no tokens");
    const B = this.layout.batch;
    for (let i = 0; i < tokens.length; i += B) {
      const n = Math.min(B, tokens.length - i);
      this.forwardBatch(tokens, i, n, pos + i, i + n === tokens.length);
    }
    return this.logitsView;
  }

  /** tokens[i0 .. i0+n) at positions pos0 …; token j's buffers at j × (one token's size). */
  private forwardBatch(tokens: ArrayLike<number>, i0: number, n: number, pos0: number, withLogits: boolean): void {
    const { k, cfg, layout: L, weights: W } = this;
    const { dim, hiddenDim, nHeads, nKVHeads, headDim } = cfg;
    const kvDim = nKVHeads * headDim;
    const D = dim * 4, KV = kvDim * 4, H = hiddenDim * 4; // bytes of one token's f32 buffers

    for (let j = 0; j < n; j++) k.get_row(W.tokenEmbd.ptr, TYPE_ID[W.tokenEmbd.type], tokens[i0 + j], dim, L.x + j * D);
    for (let l = 0; l < cfg.nLayers; l++) {
      const lw = W.layers[l];
      const kc = L.kc + l * L.kvLayerBytes, vc = L.vc + l * L.kvLayerBytes;
      // attention
      for (let j = 0; j < n; j++) {
        k.rmsnorm(L.x + j * D, lw.attnNorm.ptr, L.xb + j * D, dim, cfg.rmsEps);
        this.quantize(L.xb + j * D, dim, j);
      }
      this.matmat(lw.wq, L.xb, L.q, n);
      this.matmat(lw.wk, L.xb, L.k, n);
      this.matmat(lw.wv, L.xb, L.v, n);
      // token by token, in order: token j sees the cache as forward() at its position would
      for (let j = 0; j < n; j++) {
        const pos = pos0 + j, slot = this.kv.slot(pos);
        const q = L.q + j * D, kj = L.k + j * KV, vj = L.v + j * KV;
        k.rope(q, nHeads, headDim, pos, cfg.ropeBase);
        k.rope(kj, nKVHeads, headDim, pos, cfg.ropeBase);
        k.f32_to_f16_row(kj, kc + slot * kvDim * 2, kvDim);
        k.f32_to_f16_row(vj, vc + slot * kvDim * 2, kvDim);
        k.round_f16_row(q, dim);
        this.attend(q, kc, vc, this.kv.valid(pos), L.xb + j * D);
        this.quantize(L.xb + j * D, dim, j);
      }
      this.matmat(lw.wo, L.xb, L.xb2, n);
      // feed-forward: down(silu(gate(x)) · up(x))
      for (let j = 0; j < n; j++) {
        k.add_inplace(L.x + j * D, L.xb2 + j * D, dim);
        k.rmsnorm(L.x + j * D, lw.ffnNorm.ptr, L.xb + j * D, dim, cfg.rmsEps);
        this.quantize(L.xb + j * D, dim, j);
      }
      this.matmat(lw.wGate, L.xb, L.hb, n);
      this.matmat(lw.wUp, L.xb, L.hb2, n);
      for (let j = 0; j < n; j++) {
        k.silu_mul(L.hb + j * H, L.hb2 + j * H, hiddenDim);
        this.quantize(L.hb + j * H, hiddenDim, j);
      }
      this.matmat(lw.wDown, L.hb, L.xb2, n);
      for (let j = 0; j < n; j++) k.add_inplace(L.x + j * D, L.xb2 + j * D, dim);
    }
    if (!withLogits) return;
    k.rmsnorm(L.x + (n - 1) * D, W.outputNorm.ptr, L.xb, dim, cfg.rmsEps);
    this.quantize(L.xb, dim);
    this.matvec(W.output, L.xb, L.logits);
  }

  /** Attention of one token's query (f16-rounded) over nValid cache slots → out (dim). */
  private attend(q: number, kc: number, vc: number, nValid: number, out: number): void {
    const { k, cfg: c, layout: L } = this;
    const scale = 1 / Math.sqrt(c.headDim);
    k.attention(q, kc, vc, nValid, c.nHeads, c.nKVHeads, c.headDim, scale, L.scores, out);
  }

  /** The greedy token of the last forward()'s logits: the lowest index on ties, as argmax(). */
  greedy(): number {
    return this.k.argmax_f32(this.layout.logits, this.cfg.vocabSize);
  }

  /** Activations x (f32, n) → int8 blocks in token j's aq/a16/a16p/ad/as, for the quantized matvecs. */
  private quantize(x: number, n: number, j = 0): void {
    const L = this.layout, nb = n / 32;
    this.k.quantize_q8(x, n, L.aq + j * n, L.a16 + j * n * 2, L.a16p + j * n * 2, L.ad + j * nb * 4, L.as + j * nb * 4);
  }

  /** out (nTok, rows) = W · x (nTok, cols), each token as matvec(); quantized W reads token j's quantize(). */
  private matmat(w: Tensor, x: number, out: number, nTok: number): void {
    const { k, layout: L } = this;
    switch (w.type) {
      case "Q4_1": return k.matmat_q4_1_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out, nTok);
      case "Q4_0": return k.matmat_q4_0_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out, nTok);
      case "Q8_0": return k.matmat_q8_0(w.ptr, w.rows, w.cols, L.a16, L.ad, out, nTok);
      default: for (let j = 0; j < nTok; j++) this.matvec(w, x + j * w.cols * 4, out + j * w.rows * 4);
    }
  }

  /** out (rows) = W · x; quantized W reads the int8 copy of x made by quantize(x). */
  private matvec(w: Tensor, x: number, out: number): void {
    const { k, layout: L } = this;
    switch (w.type) {
      case "Q4_1": return k.matvec_q4_1_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out);
      case "Q4_0": return k.matvec_q4_0_fast(w.ptr, w.rows, w.cols, this.q4Act, L.ad, L.as, out);
      case "Q8_0": return k.matvec_q8_0(w.ptr, w.rows, w.cols, L.a16, L.ad, out);
      case "F32": return k.matvec_f32(w.ptr, w.rows, w.cols, x, out);
      case "F16": return k.matvec_f16(w.ptr, w.rows, w.cols, x, out);
    }
  }
}
