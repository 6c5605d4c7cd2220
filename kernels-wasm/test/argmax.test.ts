/** assembly/argmax.ts: the same index as the JS argmax the sampler uses (lowest on ties, NaN never wins), and as its scalar reference. */
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
