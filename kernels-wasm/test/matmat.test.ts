/**
 * assembly/matmat.ts (SIMD128 build, in Node): for every token, W × that token's activations is
 * bit-identical to the matvec the decode step uses, across several row tiles and token counts,
 * and close to the scalar reference. The relaxed build's matmat is checked in workerd
 * (test/matmat-relaxed-workerd.test.ts).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { nodeKernels } from "./node-runtime";
import type { KernelExports } from "../src/runtime/kernels";

let k: KernelExports;
let top = 0;
const alloc = (bytes: number) => { const p = top; top = Math.ceil((top + bytes) / 64) * 64; return p; };
const f32 = (p: number, n: number) => new Float32Array(k.memory.buffer, p, n);

beforeAll(async () => {
  k = (await nodeKernels("simd128")).k;
  k.memory.grow(512);
});

function randomBlocks(p: number, nBlocks: number, blockBytes: number, scales: number) {
  const dv = new DataView(k.memory.buffer), bytes = new Uint8Array(k.memory.buffer, p, nBlocks * blockBytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  for (let b = 0; b < nBlocks; b++) for (let s = 0; s < scales; s++) {
    dv.setUint16(p + b * blockBytes + 2 * s, ((Math.random() < 0.5 ? 1 : 0) << 15) | ((5 + Math.floor(Math.random() * 7)) << 10) | Math.floor(Math.random() * 1024), true);
  }
}

const KINDS = [["Q4_1", 20, 2], ["Q4_0", 18, 1], ["Q8_0", 34, 1]] as const;

describe.each([[1, 1, 32], [3, 7, 64], [5, 33, 96], [16, 200, 576], [4, 1536, 576], [6, 64, 1536]])("%i tokens, %i rows, %i cols", (nTok, rows, cols) => {
  it.each(KINDS)("%s matmat = matvec per token, bit for bit", (type, blockBytes, scales) => {
    top = Math.ceil(k.heap_base() / 64) * 64;
    const nb = cols / 32;
    const x = alloc(nTok * cols * 4), aq = alloc(nTok * cols), a16 = alloc(nTok * cols * 2), a16p = alloc(nTok * cols * 2);
    const ad = alloc(nTok * nb * 4), as = alloc(nTok * nb * 4), w = alloc(rows * nb * blockBytes);
    const out = alloc(nTok * rows * 4), one = alloc(rows * 4), ref = alloc(rows * 4);
    f32(x, nTok * cols).forEach((_, i, a) => (a[i] = (Math.random() - 0.5) * 6));
    for (let j = 0; j < nTok; j++) k.quantize_q8(x + j * cols * 4, cols, aq + j * cols, a16 + j * cols * 2, a16p + j * cols * 2, ad + j * nb * 4, as + j * nb * 4);
    randomBlocks(w, rows * nb, blockBytes, scales);
    if (type === "Q4_1") k.matmat_q4_1(w, rows, cols, a16p, ad, as, out, nTok);
    else if (type === "Q4_0") k.matmat_q4_0(w, rows, cols, a16p, ad, as, out, nTok);
    else k.matmat_q8_0(w, rows, cols, a16, ad, out, nTok);
    for (let j = 0; j < nTok; j++) {
      const aj = aq + j * cols, a16j = a16 + j * cols * 2, a16pj = a16p + j * cols * 2, dj = ad + j * nb * 4, sj = as + j * nb * 4;
      if (type === "Q4_1") { k.matvec_q4_1(w, rows, cols, a16pj, dj, sj, one); k.matvec_q4_1_ref(w, rows, cols, aj, dj, sj, ref); }
      else if (type === "Q4_0") { k.matvec_q4_0(w, rows, cols, a16pj, dj, sj, one); k.matvec_q4_0_ref(w, rows, cols, aj, dj, sj, ref); }
      else { k.matvec_q8_0(w, rows, cols, a16j, dj, one); k.matvec_q8_0_ref(w, rows, cols, aj, dj, ref); }
      const got = new Uint32Array(k.memory.buffer, out + j * rows * 4, rows), want = new Uint32Array(k.memory.buffer, one, rows);
      for (let r = 0; r < rows; r++) if (got[r] !== want[r]) throw new Error(`token ${j} row ${r}: ${f32(out + j * rows * 4, rows)[r]} vs matvec ${f32(one, rows)[r]}`);
      const o = f32(out + j * rows * 4, rows), rf = f32(ref, rows);
      const scale = rf.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
      for (let r = 0; r < rows; r++) expect(Math.abs(o[r] - rf[r])).toBeLessThanOrEqual(1e-4 * scale);
    }
  });
});
