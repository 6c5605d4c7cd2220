/**
 * Every SIMD kernel against its scalar reference on fresh random inputs (SIMD128 build, in
 * Node). The relaxed build is checked in workerd only (Node 20 computes relaxed_dot wrongly):
 * see test/workerd/.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { nodeKernels } from "./node-runtime";
import type { KernelExports } from "../src/runtime/kernels";

let k: KernelExports;
let top = 0;
const alloc = (bytes: number) => { const p = top; top = Math.ceil((top + bytes) / 64) * 64; return p; };
const f32 = (p: number, n: number) => new Float32Array(k.memory.buffer, p, n);
const u8 = (p: number, n: number) => new Uint8Array(k.memory.buffer, p, n);

beforeAll(async () => {
  k = (await nodeKernels("simd128")).k;
  top = Math.ceil(k.heap_base() / 64) * 64;
  k.memory.grow(256); // 16 MiB of room for the cases below
});

const rand = (lo: number, hi: number) => lo + Math.random() * (hi - lo);
/** A random f16 scale in [2^-10, 2^-3) with a random sign when `signed`. */
function f16Scale(signed: boolean): number {
  const exp = 5 + Math.floor(Math.random() * 7), mant = Math.floor(Math.random() * 1024);
  return ((signed && Math.random() < 0.5 ? 1 : 0) << 15) | (exp << 10) | mant;
}

function randomBlocks(p: number, nBlocks: number, blockBytes: number, scales: number, signedScales: boolean) {
  const dv = new DataView(k.memory.buffer);
  const bytes = u8(p, nBlocks * blockBytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  for (let b = 0; b < nBlocks; b++) for (let s = 0; s < scales; s++) dv.setUint16(p + b * blockBytes + 2 * s, f16Scale(signedScales || s > 0), true);
}

function close(a: Float32Array, b: Float32Array, rel = 1e-4) {
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) {
    if (!(Math.abs(a[i] - b[i]) <= rel * (scale + 1e-6))) throw new Error(`row ${i}: simd ${a[i]} vs ref ${b[i]} (scale ${scale})`);
  }
}

function quantizedCase(rows: number, cols: number) {
  top = Math.ceil(k.heap_base() / 64) * 64;
  const x = alloc(cols * 4), aq = alloc(cols), a16 = alloc(cols * 2), a16p = alloc(cols * 2);
  const ad = alloc(cols / 8), as = alloc(cols / 8), out = alloc(rows * 4), ref = alloc(rows * 4);
  const xs = f32(x, cols);
  for (let i = 0; i < cols; i++) xs[i] = rand(-3, 3);
  k.quantize_q8(x, cols, aq, a16, a16p, ad, as);
  return { aq, a16, a16p, ad, as, out, ref };
}

describe.each([[1, 32], [2, 64], [7, 576], [64, 1536], [33, 96]])("matvec rows=%i cols=%i", (rows, cols) => {
  const nb = (rows * cols) / 32;
  it("Q4_1 SIMD128 = reference", () => {
    const c = quantizedCase(rows, cols);
    const w = alloc(nb * 20);
    randomBlocks(w, nb, 20, 2, false);
    k.matvec_q4_1(w, rows, cols, c.a16p, c.ad, c.as, c.out);
    k.matvec_q4_1_ref(w, rows, cols, c.aq, c.ad, c.as, c.ref);
    close(f32(c.out, rows), f32(c.ref, rows));
  });
  it("Q4_0 SIMD128 = reference", () => {
    const c = quantizedCase(rows, cols);
    const w = alloc(nb * 18);
    randomBlocks(w, nb, 18, 1, true);
    k.matvec_q4_0(w, rows, cols, c.a16p, c.ad, c.as, c.out);
    k.matvec_q4_0_ref(w, rows, cols, c.aq, c.ad, c.as, c.ref);
    close(f32(c.out, rows), f32(c.ref, rows));
  });
  it("Q8_0 SIMD128 = reference", () => {
    const c = quantizedCase(rows, cols);
    const w = alloc(nb * 34);
    randomBlocks(w, nb, 34, 1, true);
    k.matvec_q8_0(w, rows, cols, c.a16, c.ad, c.out);
    k.matvec_q8_0_ref(w, rows, cols, c.aq, c.ad, c.ref);
    close(f32(c.out, rows), f32(c.ref, rows));
  });
  it("F32 and F16 SIMD128 = reference", () => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const x = alloc(cols * 4), w32 = alloc(rows * cols * 4), w16 = alloc(rows * cols * 2), out = alloc(rows * 4), ref = alloc(rows * 4);
    f32(x, cols).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    f32(w32, rows * cols).forEach((_, i, a) => (a[i] = rand(-1, 1)));
    const h = new Uint16Array(k.memory.buffer, w16, rows * cols);
    for (let i = 0; i < h.length; i++) h[i] = f16Scale(true) + 0x1000; // |w| in [2^-6, 2)
    k.matvec_f32(w32, rows, cols, x, out);
    k.matvec_f32_ref(w32, rows, cols, x, ref);
    close(f32(out, rows), f32(ref, rows));
    k.matvec_f16(w16, rows, cols, x, out);
    k.matvec_f16_ref(w16, rows, cols, x, ref);
    close(f32(out, rows), f32(ref, rows));
  });
});

describe("attention with GQA over an f16 cache", () => {
  it.each([[1], [5], [300]])("SIMD128 = reference, %i cached tokens", (n) => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const nHeads = 9, nKV = 3, hd = 64, kvDim = nKV * hd;
    const q = alloc(nHeads * hd * 4), kf = alloc(n * kvDim * 4), vf = alloc(n * kvDim * 4);
    const kc = alloc(n * kvDim * 2), vc = alloc(n * kvDim * 2), scores = alloc(n * 4), out = alloc(nHeads * hd * 4), ref = alloc(nHeads * hd * 4);
    f32(q, nHeads * hd).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    f32(kf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    f32(vf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    k.f32_to_f16_row(kf, kc, n * kvDim);
    k.f32_to_f16_row(vf, vc, n * kvDim);
    k.attention(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, out);
    k.attention_ref(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, ref);
    // Scores summed in another order can round a probability to the neighbouring f16 value
    // (both round them, as llama.cpp): allow a few such flips, not wrong attention.
    close(f32(out, nHeads * hd), f32(ref, nHeads * hd), 1e-3);
  });
});
