/**
 * assembly/decode-fast.ts: each kernel gives the same bits as the kernel it stands in for (the
 * model's greedy tokens must not move), and agrees with the scalar reference, on fresh random
 * inputs (SIMD128 build, in Node).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { nodeKernels } from "./node-runtime";
import { argmax } from "../src/runtime/sampler";
import type { KernelExports } from "../src/runtime/kernels";

let k: KernelExports;
let top = 0;
const alloc = (bytes: number) => { const p = top; top = Math.ceil((top + bytes) / 64) * 64; return p; };
const f32 = (p: number, n: number) => new Float32Array(k.memory.buffer, p, n);
const reset = () => { top = Math.ceil(k.heap_base() / 64) * 64; };
const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

beforeAll(async () => {
  k = (await nodeKernels("simd128")).k;
  k.memory.grow(256);
});

const sameBits = (a: Float32Array, b: Float32Array) => {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) throw new Error(`element ${i}: ${a[i]} vs ${b[i]}`);
};

describe("argmax_f32", () => {
  it.each([[1], [3], [17], [49152], [32000]])("= the JS argmax and the reference, n=%i", (n) => {
    reset();
    const x = alloc(n * 4), v = f32(x, n);
    for (let trial = 0; trial < 20; trial++) {
      for (let i = 0; i < n; i++) v[i] = Math.round(rand(-30, 30) * 4) / 4; // coarse values: ties are common
      if (trial === 1) v.fill(-Infinity);
      if (trial === 2) v.fill(7);
      if (trial === 3 && n > 2) v[n - 1] = NaN;
      if (trial === 4 && n > 2) v[1] = 1e30;
      const want = argmax(v);
      expect(k.argmax_f32(x, n)).toBe(want);
      expect(k.argmax_f32_ref(x, n)).toBe(want);
    }
  });
});

describe.each([[1, 32], [3, 64], [4, 288], [7, 576], [33, 96], [64, 1536]])("matvec_q8_0_x4 rows=%i cols=%i", (rows, cols) => {
  it("bit-identical to matvec_q8_0, close to the reference", () => {
    reset();
    const nb = (rows * cols) / 32;
    const x = alloc(cols * 4), aq = alloc(cols), a16 = alloc(cols * 2), a16p = alloc(cols * 2), ad = alloc(cols / 8), as = alloc(cols / 8);
    const w = alloc(nb * 34), out = alloc(rows * 4), base = alloc(rows * 4), ref = alloc(rows * 4);
    f32(x, cols).forEach((_, i, a) => (a[i] = rand(-3, 3)));
    k.quantize_q8(x, cols, aq, a16, a16p, ad, as);
    const bytes = new Uint8Array(k.memory.buffer, w, nb * 34), dv = new DataView(k.memory.buffer);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    for (let b = 0; b < nb; b++) dv.setUint16(w + b * 34, ((Math.random() < 0.5 ? 1 : 0) << 15) | ((5 + Math.floor(Math.random() * 7)) << 10) | Math.floor(Math.random() * 1024), true);
    k.matvec_q8_0_x4(w, rows, cols, a16, ad, out);
    k.matvec_q8_0(w, rows, cols, a16, ad, base);
    k.matvec_q8_0_ref(w, rows, cols, aq, ad, ref);
    sameBits(f32(out, rows), f32(base, rows));
    const r = f32(ref, rows), o = f32(out, rows);
    const scale = r.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
    for (let i = 0; i < rows; i++) expect(Math.abs(o[i] - r[i])).toBeLessThanOrEqual(1e-4 * scale);
  });
});

describe("attention_fast", () => {
  it.each([[9, 3, 64, 1], [9, 3, 64, 5], [9, 3, 64, 300], [6, 6, 48, 1], [6, 6, 48, 385], [4, 2, 24, 17]])(
    "bit-identical to attention, close to the reference: heads %i, kv heads %i, head dim %i, %i slots", (nHeads, nKV, hd, n) => {
      reset();
      const kvDim = nKV * hd;
      const q = alloc(nHeads * hd * 4), kf = alloc(n * kvDim * 4), vf = alloc(n * kvDim * 4);
      const kc = alloc(n * kvDim * 2), vc = alloc(n * kvDim * 2), scores = alloc(n * 4), qs = alloc(hd * 4);
      const out = alloc(nHeads * hd * 4), base = alloc(nHeads * hd * 4), ref = alloc(nHeads * hd * 4);
      f32(q, nHeads * hd).forEach((_, i, a) => (a[i] = rand(-4, 4)));
      f32(kf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-3, 3) * (i % 7 === 0 ? 1e-6 : 1))); // some f16 subnormals
      f32(vf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-3, 3) * (i % 5 === 0 ? 1e-6 : 1)));
      k.f32_to_f16_row(kf, kc, n * kvDim);
      k.f32_to_f16_row(vf, vc, n * kvDim);
      k.round_f16_row(q, nHeads * hd);
      k.attention_fast(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, out, qs);
      k.attention(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, base);
      k.attention_ref(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, ref);
      sameBits(f32(out, nHeads * hd), f32(base, nHeads * hd));
      const r = f32(ref, nHeads * hd), o = f32(out, nHeads * hd);
      const scale = r.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
      for (let i = 0; i < r.length; i++) expect(Math.abs(o[i] - r[i])).toBeLessThanOrEqual(1e-3 * scale);
    });
});
