/**
 * Per-phase cost of one decode step, for bench/wasm_profile.mjs: each kind of kernel call the
 * forward pass makes, repeated on the loaded model's real weights and buffers, with its count of
 * calls per token. phase 0 is the whole greedy step (forward + argmax). The harness divides
 * workerd's CPU time around each call by the repetitions (the host is shared: wall time is not
 * ours). Diagnostic only: the phases need not add up to the step exactly (cache state differs
 * when a kernel runs alone).
 */
import { argmax, type Model } from "../../kernels-wasm/src/runtime/index";

export interface Phase { name: string; callsPerToken: number; run: () => void }

export function phases(m: Model, pos: number): Phase[] {
  const k = m.kernels.k as any, L = m.layout, W = m.weights, c = m.cfg;
  const nL = c.nLayers;
  const q4 = m.kernels.variant === "relaxed" ? L.aq : L.a16p;
  const mv = (t: { ptr: number; rows: number; cols: number; type: string }, out: number) => {
    if (t.type === "Q8_0") k.matvec_q8_0(t.ptr, t.rows, t.cols, L.a16, L.ad, out);
    else if (t.type === "Q4_1") k.matvec_q4_1_fast(t.ptr, t.rows, t.cols, q4, L.ad, L.as, out);
    else if (t.type === "Q4_0") k.matvec_q4_0_fast(t.ptr, t.rows, t.cols, q4, L.ad, L.as, out);
    else throw new Error(`profile: ${t.type}`);
  };
  const nValid = Math.min(pos + 1, m.kv.capacity);
  const logits = new Float32Array(k.memory.buffer, L.logits, c.vocabSize);
  let last = 1;
  const qDim = () => k.quantize_q8(L.xb, c.dim, L.aq, L.a16, L.a16p, L.ad, L.as);
  const qHidden = () => k.quantize_q8(L.hb, c.hiddenDim, L.aq, L.a16, L.a16p, L.ad, L.as);
  return [
    { name: `whole step at pos ${pos} (forward + greedy)`, callsPerToken: 0, run: () => { m.forward(last, pos); last = m.greedy(); } },
    { name: `output matvec ${W.output.type} ${W.output.rows}x${W.output.cols}`, callsPerToken: 1, run: () => { qDim(); mv(W.output, L.logits); } },
    { name: "argmax over the vocabulary (WASM)", callsPerToken: 1, run: () => { m.greedy(); } },
    { name: "argmax over the vocabulary (JS, not used)", callsPerToken: 0, run: () => { argmax(logits); } },
    { name: "q,k,v,o matvecs", callsPerToken: 4 * nL, run: () => { qDim(); for (const w of W.layers) { mv(w.wq, L.q); mv(w.wk, L.k); mv(w.wv, L.v); mv(w.wo, L.xb2); } } },
    { name: "gate,up matvecs", callsPerToken: 2 * nL, run: () => { qDim(); for (const w of W.layers) { mv(w.wGate, L.hb); mv(w.wUp, L.hb2); } } },
    { name: "down matvec", callsPerToken: nL, run: () => { qHidden(); for (const w of W.layers) mv(w.wDown, L.xb2); } },
    { name: "quantize_q8", callsPerToken: 4 * nL + 1, run: () => { for (let i = 0; i < 3 * nL + 1; i++) qDim(); for (let i = 0; i < nL; i++) qHidden(); } },
    { name: `attention (${nValid} slots)`, callsPerToken: nL, run: () => { for (let l = 0; l < nL; l++) k.attention(L.q, L.kc + l * L.kvLayerBytes, L.vc + l * L.kvLayerBytes, nValid, c.nHeads, c.nKVHeads, c.headDim, 0.125, L.scores, L.xb); } },
    { name: "rmsnorm", callsPerToken: 2 * nL + 1, run: () => { for (let i = 0; i < 2 * nL + 1; i++) k.rmsnorm(L.x, W.outputNorm.ptr, L.xb, c.dim, c.rmsEps); } },
    { name: "rope (q and k)", callsPerToken: 2 * nL, run: () => { for (let l = 0; l < nL; l++) { k.rope(L.q, c.nHeads, c.headDim, pos, c.ropeBase); k.rope(L.k, c.nKVHeads, c.headDim, pos, c.ropeBase); } } },
    { name: "silu_mul", callsPerToken: nL, run: () => { for (let l = 0; l < nL; l++) k.silu_mul(L.hb, L.hb2, c.hiddenDim); } },
    { name: "f16 rows (KV write, q round), add_inplace", callsPerToken: 5 * nL, run: () => { for (let l = 0; l < nL; l++) { k.f32_to_f16_row(L.k, L.kc, c.nKVHeads * c.headDim); k.f32_to_f16_row(L.v, L.vc, c.nKVHeads * c.headDim); k.round_f16_row(L.q, c.dim); k.add_inplace(L.x, L.xb2, c.dim); k.add_inplace(L.x, L.xb2, c.dim); } } },
    { name: "embedding row", callsPerToken: 1, run: () => k.get_row(W.tokenEmbd.ptr, { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8 }[W.tokenEmbd.type], 123, c.dim, L.x) },
  ];
}
