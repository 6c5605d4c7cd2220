// SIMD128 matvecs (references: matvec-ref.ts). The integer dot runs in i16 lanes
// (i32x4.dot_i16x8_s: 8 MACs per instruction) against activations widened to i16 once per
// vector by quantize_q8, so rows only unpack weights. Two rows per iteration share the
// activation loads. The block scale is applied to the four i32 lanes as floats; the lanes are
// summed once per row.
import { f16_lut as f16_to_f32 } from "./f16";

// @ts-ignore: decorator
@inline export function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** Σ nibble·a over one Q4 block: qs = 16 B of nibbles, a0..a3 = the block's a16p (permuted i16). */
// @ts-ignore: decorator
@inline function dot_q4_block(qs: v128, a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const m = i16x8.splat(0x0f);
  // i16 lane i holds bytes 2i (low) and 2i+1 (high): four nibbles → elements 2i, 2i+1, 16+2i, 17+2i.
  let s = i32x4.dot_i16x8_s(v128.and(qs, m), a0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(qs, 8), m), a1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(qs, 4), m), a2));
  return i32x4.add(s, i32x4.dot_i16x8_s(i16x8.shr_u(qs, 12), a3));
}

/** Q4_1 · int8 activations. a16p: permuted i16 activations (quantize.ts). */
export function matvec_q4_1(w: usize, rows: i32, cols: i32, a16p: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 20;
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    let w0 = w + <usize>r * rowBytes, w1 = w0 + rowBytes;
    let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
    let summ0: f32 = 0, summ1: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = a16p + (<usize>b << 6);
      const a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
      const da = load<f32>(ad + (<usize>b << 2)), sa = load<f32>(as_ + (<usize>b << 2));
      const s0 = dot_q4_block(v128.load(w0, 4), a0, a1, a2, a3);
      const s1 = dot_q4_block(v128.load(w1, 4), a0, a1, a2, a3);
      acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(s0), f32x4.splat(f16_to_f32(load<u16>(w0)) * da)));
      acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(s1), f32x4.splat(f16_to_f32(load<u16>(w1)) * da)));
      summ0 += f16_to_f32(load<u16>(w0, 2)) * sa;
      summ1 += f16_to_f32(load<u16>(w1, 2)) * sa;
      w0 += 20; w1 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc0) + summ0);
    store<f32>(out + (<usize>(r + 1) << 2), hsum(acc1) + summ1);
  }
  for (; r < rows; r++) {
    let w0 = w + <usize>r * rowBytes;
    let acc0 = f32x4.splat(0);
    let summ0: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = a16p + (<usize>b << 6);
      const s0 = dot_q4_block(v128.load(w0, 4), v128.load(a), v128.load(a, 16), v128.load(a, 32), v128.load(a, 48));
      acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(s0), f32x4.splat(f16_to_f32(load<u16>(w0)) * load<f32>(ad + (<usize>b << 2)))));
      summ0 += f16_to_f32(load<u16>(w0, 2)) * load<f32>(as_ + (<usize>b << 2));
      w0 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc0) + summ0);
  }
}

/** Q4_0 · int8 activations: d·(Σq·a − 8·Σa); Σa from the i16 activations. a16p as Q4_1. */
export function matvec_q4_0(w: usize, rows: i32, cols: i32, a16p: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  const ones = i16x8.splat(1);
  let blk = w;
  for (let r = 0; r < rows; r++) {
    let acc = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const a = a16p + (<usize>b << 6);
      const a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
      const s = dot_q4_block(v128.load(blk, 2), a0, a1, a2, a3);
      const sa = i32x4.dot_i16x8_s(i16x8.add(i16x8.add(a0, a1), i16x8.add(a2, a3)), ones);
      const dd = f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2));
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(i32x4.sub(s, i32x4.shl(sa, 3))), f32x4.splat(dd)));
      blk += 18;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}

/** Q8_0 · int8 activations. a16: natural-order i16 activations (quantize.ts). */
export function matvec_q8_0(w: usize, rows: i32, cols: i32, a16: usize, ad: usize, out: usize): void {
  const nb = cols >> 5;
  let blk = w;
  for (let r = 0; r < rows; r++) {
    let acc = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const a = a16 + (<usize>b << 6);
      const q0 = v128.load(blk, 2), q1 = v128.load(blk, 18);
      let s = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q0), v128.load(a));
      s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q0), v128.load(a, 16)));
      s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q1), v128.load(a, 32)));
      s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q1), v128.load(a, 48)));
      const dd = f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2));
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), f32x4.splat(dd)));
      blk += 34;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}

/** F32 weights; cols a multiple of 4. */
export function matvec_f32(w: usize, rows: i32, cols: i32, x: usize, out: usize): void {
  for (let r = 0; r < rows; r++) {
    let acc = f32x4.splat(0);
    const row = w + (<usize>r * cols << 2);
    for (let c = 0; c < cols; c += 4) {
      acc = f32x4.add(acc, f32x4.mul(v128.load(row + (<usize>c << 2)), v128.load(x + (<usize>c << 2))));
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}

/** F16 weights; cols a multiple of 4. Halves widened with the same scale trick as f16_to_f32. */
export function matvec_f16(w: usize, rows: i32, cols: i32, x: usize, out: usize): void {
  const two112 = f32x4.splat(reinterpret<f32>(0x77800000));
  const signm = i32x4.splat(0x8000), magm = i32x4.splat(0x7fff);
  for (let r = 0; r < rows; r++) {
    let acc = f32x4.splat(0);
    const row = w + (<usize>r * cols << 1);
    for (let c = 0; c < cols; c += 4) {
      const h = v128.load16x4_u(row + (<usize>c << 1));
      const bits = v128.or(i32x4.shl(v128.and(h, signm), 16), i32x4.shl(v128.and(h, magm), 13));
      acc = f32x4.add(acc, f32x4.mul(f32x4.mul(bits, two112), v128.load(x + (<usize>c << 2))));
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}
