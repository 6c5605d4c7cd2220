// Relaxed-SIMD matvecs for 4-bit weights (references: matvec-ref.ts). The 0..15 nibbles fit
// i32x4.relaxed_dot_i8x16_i7x16_add_s's 7-bit operand: 16 MACs per instruction, twice the
// SIMD128 path. Only used after a start-up self-check (engines may compute it differently;
// Node 20 does, wrongly). Signed activations must be the FIRST operand.
import { f16_lut as f16_to_f32 } from "./f16";
import { hsum } from "./matvec-simd";
import { hsum_x86 } from "./ggml-math";

/**
 * Q4_1 · int8 activations (aq: natural-order i8). Two rows per iteration share the loads.
 * llama.cpp's float order (matvec_q4_1_ref): relaxed_dot's i32 lane k already sums elements
 * 4k..4k+3, and f32x4.relaxed_madd is the f32 FMA where the engine fuses it (x86 with FMA3,
 * ARM); the start-up self-check (src/runtime/self-check.ts) rejects this build where it does not.
 */
export function matvec_q4_1_relaxed(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 20;
  const mask = i8x16.splat(0x0f);
  const zero = i32x4.splat(0);
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    let w0 = w + <usize>r * rowBytes, w1 = w0 + rowBytes;
    let l0 = f32x4.splat(0), h0 = l0, l1 = l0, h1 = l0;
    let summ0: f32 = 0, summ1: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = aq + (<usize>b << 5);
      const a0 = v128.load(a), a1 = v128.load(a, 16);
      const da = load<f32>(ad + (<usize>b << 2)), sa = load<f32>(as_ + (<usize>b << 2));
      const q0 = v128.load(w0, 4), q1 = v128.load(w1, 4);
      const dd0 = f32x4.splat(f16_to_f32(load<u16>(w0)) * da), dd1 = f32x4.splat(f16_to_f32(load<u16>(w1)) * da);
      l0 = f32x4.relaxed_madd(dd0, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, v128.and(q0, mask), zero)), l0);
      h0 = f32x4.relaxed_madd(dd0, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, i8x16.shr_u(q0, 4), zero)), h0);
      l1 = f32x4.relaxed_madd(dd1, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, v128.and(q1, mask), zero)), l1);
      h1 = f32x4.relaxed_madd(dd1, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, i8x16.shr_u(q1, 4), zero)), h1);
      // m·s is exact in f32 (two f16 values), so llama.cpp's FMA here is a plain add
      summ0 += f16_to_f32(load<u16>(w0, 2)) * sa;
      summ1 += f16_to_f32(load<u16>(w1, 2)) * sa;
      w0 += 20; w1 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum_x86(f32x4.add(l0, h0)) + summ0);
    store<f32>(out + (<usize>(r + 1) << 2), hsum_x86(f32x4.add(l1, h1)) + summ1);
  }
  for (; r < rows; r++) {
    let w0 = w + <usize>r * rowBytes;
    let l0 = f32x4.splat(0), h0 = l0;
    let summ0: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = aq + (<usize>b << 5);
      const q0 = v128.load(w0, 4);
      const dd0 = f32x4.splat(f16_to_f32(load<u16>(w0)) * load<f32>(ad + (<usize>b << 2)));
      l0 = f32x4.relaxed_madd(dd0, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(a), v128.and(q0, mask), zero)), l0);
      h0 = f32x4.relaxed_madd(dd0, f32x4.convert_i32x4_s(i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load(a, 16), i8x16.shr_u(q0, 4), zero)), h0);
      summ0 += f16_to_f32(load<u16>(w0, 2)) * load<f32>(as_ + (<usize>b << 2));
      w0 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum_x86(f32x4.add(l0, h0)) + summ0);
  }
}

export function matvec_q4_0_relaxed(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  const mask = i8x16.splat(0x0f);
  const ones = i8x16.splat(1);
  const zero = i32x4.splat(0);
  let blk = w;
  for (let r = 0; r < rows; r++) {
    let acc = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const a = aq + (<usize>b << 5);
      const qs = v128.load(blk, 2);
      const a0 = v128.load(a), a1 = v128.load(a, 16);
      let s = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, v128.and(qs, mask), zero);
      s = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, i8x16.shr_u(qs, 4), s);
      // Σ(q − 8)·a = Σq·a − 8·Σa
      let sa = i32x4.relaxed_dot_i8x16_i7x16_add_s(a0, ones, zero);
      sa = i32x4.relaxed_dot_i8x16_i7x16_add_s(a1, ones, sa);
      s = i32x4.sub(s, i32x4.shl(sa, 3));
      const dd = f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2));
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), f32x4.splat(dd)));
      blk += 18;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}
