// SIMD128 matvecs (references: matvec-ref.ts). The integer dot runs in i16 lanes
// (i32x4.dot_i16x8_s: 8 MACs per instruction) against activations widened to i16 once per
// vector by quantize_q8, so rows only unpack weights. Two rows per iteration share the
// activation loads. The block scale is applied to the four i32 lanes as floats; the lanes are
// summed once per row.
import { f16_lut as f16_to_f32 } from "./f16";
import { hsum_x86 } from "./ggml-math";

// @ts-ignore: decorator
@inline export function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** Σ nibble·a over one Q4 block: qs = 16 B of nibbles, a0..a3 = the block's a16p (permuted i16). */
// @ts-ignore: decorator
@inline function dot_q4_block(qs: v128, a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const lo = dot_q4_lo(qs, a0, a1);
  return i32x4.add(lo, dot_q4_hi(qs, a2, a3));
}

// i16 lane i of qs holds bytes 2i (low) and 2i+1 (high): four nibbles → elements 2i, 2i+1,
// 16+2i, 17+2i. With a16p (a0 = even elements 0..14, a1 = odd 1..15, a2/a3 the same for 16..31),
// i32 lane k of dot_q4_lo is Σ over elements 4k..4k+3 and of dot_q4_hi over 16+4k..19+4k: the
// eight lane sums of llama.cpp's x86 Q4 dot (mul_sum_us8_pairs_float).
// @ts-ignore: decorator
@inline function dot_q4_lo(qs: v128, a0: v128, a1: v128): v128 {
  const m = i16x8.splat(0x0f);
  return i32x4.add(i32x4.dot_i16x8_s(v128.and(qs, m), a0), i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(qs, 8), m), a1));
}
// @ts-ignore: decorator
@inline function dot_q4_hi(qs: v128, a2: v128, a3: v128): v128 {
  const m = i16x8.splat(0x0f);
  return i32x4.add(i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(qs, 4), m), a2), i32x4.dot_i16x8_s(i16x8.shr_u(qs, 12), a3));
}

/** f64 lanes rounded to f32 and back: with an exact f64 product before it, an f32 FMA. */
// @ts-ignore: decorator
@inline function round32(v: v128): v128 {
  return f64x2.promote_low_f32x4(f32x4.demote_f64x2_zero(v));
}

/** acc (f64x2, f32 values) = fma32(dd, s lanes 0..1, acc) */
// @ts-ignore: decorator
@inline function fma_lo(acc: v128, s: v128, dd: v128): v128 {
  return round32(f64x2.add(acc, f64x2.mul(f64x2.convert_low_i32x4_s(s), dd)));
}
/** acc (f64x2, f32 values) = fma32(dd, s lanes 2..3, acc) */
// @ts-ignore: decorator
@inline function fma_hi(acc: v128, s: v128, dd: v128): v128 {
  return round32(f64x2.add(acc, f64x2.mul(f64x2.convert_low_i32x4_s(v128.shuffle<i32>(s, s, 2, 3, 2, 3)), dd)));
}

/** hsum_float_8 of eight f32 lanes held in four f64x2 (lanes 0-1, 2-3, 4-5, 6-7). */
// @ts-ignore: decorator
@inline function hsum8(l01: v128, l23: v128, l45: v128, l67: v128): f32 {
  const lo = v128.shuffle<i32>(f32x4.demote_f64x2_zero(l01), f32x4.demote_f64x2_zero(l23), 0, 1, 4, 5);
  const hi = v128.shuffle<i32>(f32x4.demote_f64x2_zero(l45), f32x4.demote_f64x2_zero(l67), 0, 1, 4, 5);
  return hsum_x86(f32x4.add(lo, hi));
}

/**
 * Q4_1 · int8 activations. a16p: permuted i16 activations (quantize.ts). llama.cpp's float order
 * (matvec_q4_1_ref): eight lanes with an f32 FMA per block (emulated in f64: SIMD128 has no FMA).
 */
export function matvec_q4_1(w: usize, rows: i32, cols: i32, a16p: usize, ad: usize, as_: usize, out: usize): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 20;
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    let w0 = w + <usize>r * rowBytes, w1 = w0 + rowBytes;
    let p0 = f64x2.splat(0), p1 = p0, p2 = p0, p3 = p0, q0 = p0, q1 = p0, q2 = p0, q3 = p0;
    let summ0: f32 = 0, summ1: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = a16p + (<usize>b << 6);
      const a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
      const da = load<f32>(ad + (<usize>b << 2)), sa = load<f32>(as_ + (<usize>b << 2));
      const x0 = v128.load(w0, 4), x1 = v128.load(w1, 4);
      const s0l = dot_q4_lo(x0, a0, a1), s0h = dot_q4_hi(x0, a2, a3);
      const s1l = dot_q4_lo(x1, a0, a1), s1h = dot_q4_hi(x1, a2, a3);
      const dd0 = f64x2.splat(<f64>(f16_to_f32(load<u16>(w0)) * da)), dd1 = f64x2.splat(<f64>(f16_to_f32(load<u16>(w1)) * da));
      p0 = fma_lo(p0, s0l, dd0); p1 = fma_hi(p1, s0l, dd0); p2 = fma_lo(p2, s0h, dd0); p3 = fma_hi(p3, s0h, dd0);
      q0 = fma_lo(q0, s1l, dd1); q1 = fma_hi(q1, s1l, dd1); q2 = fma_lo(q2, s1h, dd1); q3 = fma_hi(q3, s1h, dd1);
      // m·s is exact in f32 (two f16 values), so its FMA is a plain add
      summ0 += f16_to_f32(load<u16>(w0, 2)) * sa;
      summ1 += f16_to_f32(load<u16>(w1, 2)) * sa;
      w0 += 20; w1 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum8(p0, p1, p2, p3) + summ0);
    store<f32>(out + (<usize>(r + 1) << 2), hsum8(q0, q1, q2, q3) + summ1);
  }
  for (; r < rows; r++) {
    let w0 = w + <usize>r * rowBytes;
    let p0 = f64x2.splat(0), p1 = p0, p2 = p0, p3 = p0;
    let summ0: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const a = a16p + (<usize>b << 6);
      const x0 = v128.load(w0, 4);
      const s0l = dot_q4_lo(x0, v128.load(a), v128.load(a, 16)), s0h = dot_q4_hi(x0, v128.load(a, 32), v128.load(a, 48));
      const dd0 = f64x2.splat(<f64>(f16_to_f32(load<u16>(w0)) * load<f32>(ad + (<usize>b << 2))));
      p0 = fma_lo(p0, s0l, dd0); p1 = fma_hi(p1, s0l, dd0); p2 = fma_lo(p2, s0h, dd0); p3 = fma_hi(p3, s0h, dd0);
      summ0 += f16_to_f32(load<u16>(w0, 2)) * load<f32>(as_ + (<usize>b << 2));
      w0 += 20;
    }
    store<f32>(out + (<usize>r << 2), hsum8(p0, p1, p2, p3) + summ0);
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

/** The eight lane sums of one Q8_0 block (lane k: elements 4k..4k+3): lo = lanes 0..3, hi = 4..7. */
// @ts-ignore: decorator
@inline function q8_pairs(q: v128, a0: v128, a1: v128): v128 {
  // dot lanes hold pairs (2j, 2j+1); adding neighbouring lanes gives the four-element sums
  const p = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q), a0);
  const r = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q), a1);
  return i32x4.add(v128.shuffle<i32>(p, r, 0, 2, 4, 6), v128.shuffle<i32>(p, r, 1, 3, 5, 7));
}

/** Q8_0 · int8 activations. a16: natural-order i16 activations (quantize.ts). llama.cpp's float
 *  order (matvec_q8_0_ref): eight FMA lanes, emulated in f64 in the SIMD128 build; the relaxed
 *  build (same source) uses f32x4.relaxed_madd, whose fusion its start-up self-check verifies. */
export function matvec_q8_0(w: usize, rows: i32, cols: i32, a16: usize, ad: usize, out: usize): void {
  const nb = cols >> 5;
  let blk = w;
  for (let r = 0; r < rows; r++) {
    if (ASC_FEATURE_RELAXED_SIMD) {
      let lo = f32x4.splat(0), hi = lo;
      for (let b = 0; b < nb; b++) {
        const a = a16 + (<usize>b << 6);
        const sl = q8_pairs(v128.load(blk, 2), v128.load(a), v128.load(a, 16));
        const sh = q8_pairs(v128.load(blk, 18), v128.load(a, 32), v128.load(a, 48));
        const dd = f32x4.splat(f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2)));
        lo = f32x4.relaxed_madd(dd, f32x4.convert_i32x4_s(sl), lo);
        hi = f32x4.relaxed_madd(dd, f32x4.convert_i32x4_s(sh), hi);
        blk += 34;
      }
      store<f32>(out + (<usize>r << 2), hsum_x86(f32x4.add(lo, hi)));
    } else {
      let p0 = f64x2.splat(0), p1 = p0, p2 = p0, p3 = p0;
      for (let b = 0; b < nb; b++) {
        const a = a16 + (<usize>b << 6);
        const sl = q8_pairs(v128.load(blk, 2), v128.load(a), v128.load(a, 16));
        const sh = q8_pairs(v128.load(blk, 18), v128.load(a, 32), v128.load(a, 48));
        const dd = f64x2.splat(<f64>(f16_to_f32(load<u16>(blk)) * load<f32>(ad + (<usize>b << 2))));
        p0 = fma_lo(p0, sl, dd); p1 = fma_hi(p1, sl, dd); p2 = fma_lo(p2, sh, dd); p3 = fma_hi(p3, sh, dd);
        blk += 34;
      }
      store<f32>(out + (<usize>r << 2), hsum8(p0, p1, p2, p3));
    }
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
