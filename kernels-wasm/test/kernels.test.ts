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

/** Bit-identical: the SIMD kernels and their references do the same f32 operations in the same
 *  order (llama.cpp's, see assembly/ggml-math.ts). */
function same(a: Float32Array, b: Float32Array) {
  for (let i = 0; i < b.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`element ${i}: simd ${a[i]} vs ref ${b[i]}`);
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
    same(f32(c.out, rows), f32(c.ref, rows));
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
    same(f32(c.out, rows), f32(c.ref, rows));
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
  it.each([[1, 64], [5, 64], [300, 64], [70, 48], [40, 128]])("SIMD128 = reference, %i cached tokens, head dim %i", (n, hd) => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const nHeads = 9, nKV = 3, kvDim = nKV * hd;
    const q = alloc(nHeads * hd * 4), kf = alloc(n * kvDim * 4), vf = alloc(n * kvDim * 4);
    const kc = alloc(n * kvDim * 2), vc = alloc(n * kvDim * 2), scores = alloc(n * 4), out = alloc(nHeads * hd * 4), ref = alloc(nHeads * hd * 4);
    f32(q, nHeads * hd).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    f32(kf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    f32(vf, n * kvDim).forEach((_, i, a) => (a[i] = rand(-2, 2)));
    k.round_f16_row(q, nHeads * hd);
    k.f32_to_f16_row(kf, kc, n * kvDim);
    k.f32_to_f16_row(vf, vc, n * kvDim);
    k.attention(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, out);
    k.attention_ref(q, kc, vc, n, nHeads, nKV, hd, 0.125, scores, ref);
    same(f32(out, nHeads * hd), f32(ref, nHeads * hd));
    // and it is attention: within f16 rounding of softmax(q·k·scale)·V computed in f64
    const Q = f32(q, nHeads * hd), K = f32(kf, n * kvDim), V = f32(vf, n * kvDim), O = f32(out, nHeads * hd);
    for (let h = 0; h < nHeads; h++) {
      const kv = Math.floor(h / (nHeads / nKV)) * hd;
      const s = Array.from({ length: n }, (_, t) => { let d = 0; for (let i = 0; i < hd; i++) d += Q[h * hd + i] * K[t * kvDim + kv + i]; return d * 0.125; });
      const mx = Math.max(...s), e = s.map((x) => Math.exp(x - mx)), z = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) {
        let o = 0;
        for (let t = 0; t < n; t++) o += (e[t] / z) * V[t * kvDim + kv + i];
        expect(Math.abs(O[h * hd + i] - o)).toBeLessThan(2e-2);
      }
    }
  });
});

describe("llama.cpp's scalar math", () => {
  it("rope rotates pairs by pos·base^(-2i/d)", () => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const hd = 64, x = alloc(2 * hd * 4), X = f32(x, 2 * hd);
    const src = Array.from({ length: 2 * hd }, () => rand(-2, 2));
    X.set(src);
    k.rope(x, 2, hd, 37, 100000);
    for (let h = 0; h < 2; h++) for (let i = 0; i < hd; i += 2) {
      const th = 37 * Math.pow(100000, -i / hd), a = src[h * hd + i], b = src[h * hd + i + 1];
      expect(Math.abs(X[h * hd + i] - (a * Math.cos(th) - b * Math.sin(th)))).toBeLessThan(1e-4);
      expect(Math.abs(X[h * hd + i + 1] - (a * Math.sin(th) + b * Math.cos(th)))).toBeLessThan(1e-4);
    }
  });
  it("rope's cos/sin are glibc's sinf/cosf bit for bit (not the correctly rounded ones)", () => {
    // cos θ_i, sin θ_i for pos 1893, base 1e5, head dim 64 (θ_i = 1893·s^i in f32), from glibc
    // 2.36's cosf/sinf: 7 of these 32 pairs differ by one ulp from the correctly rounded value,
    // 2 of them in the large-argument (|θ| ≥ 120) reduction.
    const glibc = [0xbe41d1f1, 0x3f7b5f59, 0x3d3e1658, 0x3f7fb964, 0xbe676e3a, 0xbf79604f, 0xbf3c0e2c, 0x3f2db2d3, 0xbf70c2cb, 0x3eae037c, 0x3f1ea36d, 0xbf48ec2b, 0x3e835ec4, 0xbf776e03, 0xbe35f498, 0x3f7bed15, 0x3f6f5214, 0xbeb5c980, 0x3ee222e2, 0xbf65ad5a, 0xbb02222e, 0x3f7fffdf, 0x3d3c6269, 0xbf7fbaa6, 0x3f7e6e12, 0x3de2788e, 0x3ea9471d, 0xbf719a80, 0x3f767aab, 0xbe8a554d, 0xbf29a0fb, 0x3f3fbbff, 0x3f74cad0, 0xbe95d635, 0xbf028768, 0xbf5c391b, 0xbf7975e7, 0x3e65f8b1, 0xbee4e03d, 0x3f64ff6a, 0x3e1a49af, 0x3f7d13d5, 0x3f0c55d1, 0x3f561b86, 0x3f453b31, 0x3f233477, 0x3f62c98a, 0x3eed8442, 0x3f71a1b7, 0x3ea91de6, 0x3f78f815, 0x3e6e5745, 0x3f7c916d, 0x3e271c40, 0x3f7e53ac, 0x3de9c442, 0x3f7f2f4d, 0x3da34ff0, 0x3f7f9a58, 0x3d640d85, 0x3f7fce7d, 0x3d1f2f39, 0x3f7fe7e3, 0x3cde323f];
    top = Math.ceil(k.heap_base() / 64) * 64;
    const hd = 64, x = alloc(hd * 4), X = f32(x, hd);
    for (let i = 0; i < hd; i += 2) { X[i] = 1; X[i + 1] = 0; } // rotates (1, 0) to (cos θ, sin θ) exactly
    k.rope(x, 1, hd, 1893, 100000);
    expect(Array.from(new Uint32Array(k.memory.buffer, x, hd))).toEqual(glibc);
  });
  it("silu_mul is silu(g)·u within ggml's exp error", () => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const n = 256, g = alloc(n * 4), u = alloc(n * 4);
    const gs = Array.from({ length: n }, (_, i) => (i === 0 ? -200 : i === 1 ? 200 : rand(-20, 20))), us = Array.from({ length: n }, () => rand(-3, 3));
    f32(g, n).set(gs); f32(u, n).set(us);
    k.silu_mul(g, u, n);
    const G = f32(g, n);
    for (let i = 0; i < n; i++) {
      const want = (gs[i] / (1 + Math.exp(-gs[i]))) * us[i];
      expect(Math.abs(G[i] - want)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(want)));
    }
  });
});
