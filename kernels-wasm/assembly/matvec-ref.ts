// Scalar references: out[r] = Σ_c W[r, c] · x[c]. W rows are GGUF blocks, row-major (rows, cols).
// Quantized weights take int8 activations (quantize.ts layout); float weights take f32 x.
// Each SIMD kernel (matvec-simd.ts, matvec-relaxed.ts) must match these on random inputs.
import { f16_to_f32 } from "./f16";
import { fma32 } from "./ggml-math";

/** Eight f32 lane accumulators (static: the runtime owns the heap). */
const ACC: usize = memory.data(32, 16);

/**
 * Q4_1 block (20 B): f16 d, f16 m, 16 B nibbles (low = elements 0..15, high = 16..31). w = d·q + m.
 * Float order of llama.cpp's x86 ggml_vec_dot_q4_1_q8_1: eight lanes, lane i holding the integer
 * sum over elements 4i..4i+3 of each block, accumulated across blocks with an f32 FMA by d·d_a;
 * then (lane i + lane i+4), summed as (0 + 2) + (1 + 3); then + Σ m·s (serial FMA).
 */
export function matvec_q4_1_ref(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < 8; i++) store<f32>(ACC + (<usize>i << 2), 0);
    let summs: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const blk = w + (<usize>(r * nb + b)) * 20;
      const a = aq + (<usize>b << 5);
      const dd = f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2));
      for (let i = 0; i < 8; i++) {
        let g: i32 = 0;
        for (let e = 4 * i; e < 4 * i + 4; e++) {
          const byte = <i32>load<u8>(blk + 4 + (e & 15));
          g += (e < 16 ? byte & 15 : byte >> 4) * <i32>load<i8>(a + e);
        }
        store<f32>(ACC + (<usize>i << 2), fma32(dd, <f32>g, load<f32>(ACC + (<usize>i << 2))));
      }
      summs = fma32(f16_to_f32(load<u16>(blk, 2)), load<f32>(as_ + (<usize>b << 2)), summs);
    }
    store<f32>(out + (<usize>r << 2), hsum8_ref(ACC) + summs);
  }
}

/** hsum_float_8: r_i = l_i + l_{i+4}, then (r0 + r2) + (r1 + r3). */
function hsum8_ref(p: usize): f32 {
  const r0 = load<f32>(p) + load<f32>(p, 16), r1 = load<f32>(p, 4) + load<f32>(p, 20);
  const r2 = load<f32>(p, 8) + load<f32>(p, 24), r3 = load<f32>(p, 12) + load<f32>(p, 28);
  return (r0 + r2) + (r1 + r3);
}

/** Q4_0 block (18 B): f16 d, 16 B nibbles. w = d·(q − 8). */
export function matvec_q4_0_ref(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    let sum: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const blk = w + (<usize>(r * nb + b)) * 18;
      const a = aq + (<usize>b << 5);
      let sumi: i32 = 0;
      for (let j = 0; j < 16; j++) {
        const q = <i32>load<u8>(blk + 2 + j);
        sumi += ((q & 15) - 8) * <i32>load<i8>(a + j) + ((q >> 4) - 8) * <i32>load<i8>(a + 16 + j);
      }
      sum += f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2)) * <f32>sumi;
    }
    store<f32>(out + (<usize>r << 2), sum);
  }
}

/** Q8_0 block (34 B): f16 d, 32 × i8. w = d·q. Float order of ggml_vec_dot_q8_0_q8_0 (x86): as Q4_1's
 *  eight FMA lanes of four elements, without the m term. */
export function matvec_q8_0_ref(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, out: usize): void {
  const nb = cols >> 5;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < 8; i++) store<f32>(ACC + (<usize>i << 2), 0);
    for (let b = 0; b < nb; b++) {
      const blk = w + (<usize>(r * nb + b)) * 34;
      const a = aq + (<usize>b << 5);
      const dd = f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2));
      for (let i = 0; i < 8; i++) {
        let g: i32 = 0;
        for (let e = 4 * i; e < 4 * i + 4; e++) g += <i32>load<i8>(blk + 2 + e) * <i32>load<i8>(a + e);
        store<f32>(ACC + (<usize>i << 2), fma32(dd, <f32>g, load<f32>(ACC + (<usize>i << 2))));
      }
    }
    store<f32>(out + (<usize>r << 2), hsum8_ref(ACC));
  }
}

/** F32 weights, f32 x. */
export function matvec_f32_ref(w: usize, rows: i32, cols: i32, x: usize, out: usize): void {
  for (let r = 0; r < rows; r++) {
    let sum: f32 = 0;
    const row = w + (<usize>r * cols << 2);
    for (let c = 0; c < cols; c++) sum += load<f32>(row + (<usize>c << 2)) * load<f32>(x + (<usize>c << 2));
    store<f32>(out + (<usize>r << 2), sum);
  }
}

/** F16 weights, f32 x. */
export function matvec_f16_ref(w: usize, rows: i32, cols: i32, x: usize, out: usize): void {
  for (let r = 0; r < rows; r++) {
    let sum: f32 = 0;
    const row = w + (<usize>r * cols << 1);
    for (let c = 0; c < cols; c++) sum += f16_to_f32(load<u16>(row + (<usize>c << 1))) * load<f32>(x + (<usize>c << 2));
    store<f32>(out + (<usize>r << 2), sum);
  }
}
