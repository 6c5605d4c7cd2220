/**
 * Start-up check of the relaxed-SIMD build: its Q4_1 matvec must equal the scalar reference bit
 * for bit on fixed pseudo-random blocks. That holds only where the engine computes relaxed_dot
 * as x86/ARM do (Node 20 does not) and fuses f32x4.relaxed_madd into one FMA (llama.cpp's
 * rounding, see assembly/ggml-math.ts); elsewhere the runtime keeps the SIMD128 build. Uses
 * 64 KiB of the module's memory at `at`, before the runtime lays its buffers out there.
 */
import type { KernelExports } from "./kernels";

export function relaxedSelfCheck(k: KernelExports, at: number): boolean {
  const rows = 32, cols = 256, nb = cols / 32;
  const mem = () => new Uint8Array(k.memory.buffer);
  const need = at + 64 * 1024;
  if (k.memory.buffer.byteLength < need) k.memory.grow(Math.ceil((need - k.memory.buffer.byteLength) / 65536));
  // Layout: x f32 (cols) | aq i8 | a16 i16 | a16p i16 | ad | as | w (rows·nb·20) | out (rows) | ref (rows)
  const x = at, aq = x + cols * 4, a16 = aq + cols, a16p = a16 + cols * 2, ad = a16p + cols * 2, as = ad + nb * 4, w = as + nb * 4;
  const out = w + rows * nb * 20, ref = out + rows * 4;
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const f = new Float32Array(k.memory.buffer, x, cols);
  for (let i = 0; i < cols; i++) f[i] = (rnd() - 0.5) * 8;
  f[3] = 4; // an extreme value: |q| = 127 somewhere
  k.quantize_q8(x, cols, aq, a16, a16p, ad, as);
  const wb = mem();
  const dv = new DataView(k.memory.buffer);
  for (let b = 0; b < rows * nb; b++) {
    const o = w + b * 20;
    dv.setUint16(o, 0x2c00 + Math.floor(rnd() * 0x400), true); // d ≈ 0.06..0.12
    dv.setUint16(o + 2, 0xac00 + Math.floor(rnd() * 0x400), true); // m < 0
    for (let j = 0; j < 16; j++) wb[o + 4 + j] = Math.floor(rnd() * 256);
  }
  for (let j = 0; j < 16; j++) wb[w + 4 + j] = 0xff; // all nibbles 15
  k.matvec_q4_1_fast(w, rows, cols, aq, ad, as, out);
  k.matvec_q4_1_ref(w, rows, cols, aq, ad, as, ref);
  const a = new Float32Array(k.memory.buffer, out, rows), b = new Float32Array(k.memory.buffer, ref, rows);
  for (let i = 0; i < rows; i++) {
    if (!Object.is(a[i], b[i])) return false;
  }
  return true;
}
