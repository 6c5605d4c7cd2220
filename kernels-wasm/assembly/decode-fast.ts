// Faster decode kernels with the SAME results, bit for bit, as the kernels they stand in for
// (tests: test/decode-fast.test.ts compares them bit-exactly and against the references):
//   argmax_f32          the sampler's greedy pick without a JS loop over the vocabulary
//   matvec_q8_0_x4      matvec_q8_0, four rows per iteration sharing the activation loads
//   attention_fast      attention: cheaper f16 widening, V accumulated in registers
// Each output element is computed with the same float operations in the same order as the
// original kernel; only loads, the widening of f16 and the loop nesting differ.
import { f16_lut as f16_to_f32 } from "./f16";
import { hsum } from "./matvec-simd";
import { softmax } from "./attention";

/** Index of the largest of n f32 values; the lowest index on ties (llama.cpp's greedy sampler).
 *  NaN never wins (as `x > best` in the JS argmax). */
export function argmax_f32(x: usize, n: i32): i32 {
  // Lane-wise maximum first (4 chains), then the first index holding it: two passes over a
  // vocabulary-sized row that sits in L1/L2 right after the output matvec.
  let i = 0;
  let m = f32x4.splat(-Infinity);
  for (; i + 16 <= n; i += 16) {
    const p = x + (<usize>i << 2);
    m = f32x4.max(m, f32x4.max(f32x4.max(v128.load(p), v128.load(p, 16)), f32x4.max(v128.load(p, 32), v128.load(p, 48))));
  }
  let best: f32 = Mathf.max(Mathf.max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), Mathf.max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
  for (; i < n; i++) { const v = load<f32>(x + (<usize>i << 2)); if (v > best) best = v; }
  // f32x4.max propagates NaN: a NaN anywhere makes best NaN; then fall back to the scalar scan.
  if (isNaN(best)) return argmax_f32_ref(x, n);
  const b = f32x4.splat(best);
  for (i = 0; i + 4 <= n; i += 4) {
    if (v128.any_true(f32x4.eq(v128.load(x + (<usize>i << 2)), b))) break;
  }
  for (; i < n; i++) if (load<f32>(x + (<usize>i << 2)) == best) return i;
  return 0; // n == 0, or every value -Infinity below what a float can hold: as the JS argmax
}

/** Scalar reference of argmax_f32 (the JS argmax of src/runtime/sampler.ts, in AssemblyScript). */
export function argmax_f32_ref(x: usize, n: i32): i32 {
  let best = 0;
  for (let i = 1; i < n; i++) if (load<f32>(x + (<usize>i << 2)) > load<f32>(x + (<usize>best << 2))) best = i;
  return best;
}

// @ts-ignore: decorator
@inline function dot_q8_block(blk: usize, a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const q0 = v128.load(blk, 2), q1 = v128.load(blk, 18);
  let s = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q0), a0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q0), a1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q1), a2));
  return i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q1), a3));
}

// @ts-ignore: decorator
@inline function q8_step(acc: v128, blk: usize, a0: v128, a1: v128, a2: v128, a3: v128, da: f32): v128 {
  const s = dot_q8_block(blk, a0, a1, a2, a3);
  return f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), f32x4.splat(f16_to_f32(load<u16>(blk)) * da)));
}

/** matvec_q8_0 (matvec-simd.ts) with four rows per iteration. a16: natural-order i16 activations. */
export function matvec_q8_0_x4(w: usize, rows: i32, cols: i32, a16: usize, ad: usize, out: usize): void {
  const nb = cols >> 5;
  const rowBytes = <usize>nb * 34;
  let r = 0;
  for (; r + 3 < rows; r += 4) {
    let w0 = w + <usize>r * rowBytes;
    let acc0 = f32x4.splat(0), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (let b = 0; b < nb; b++) {
      const a = a16 + (<usize>b << 6);
      const a0 = v128.load(a), a1 = v128.load(a, 16), a2 = v128.load(a, 32), a3 = v128.load(a, 48);
      const da = load<f32>(ad + (<usize>b << 2));
      acc0 = q8_step(acc0, w0, a0, a1, a2, a3, da);
      acc1 = q8_step(acc1, w0 + rowBytes, a0, a1, a2, a3, da);
      acc2 = q8_step(acc2, w0 + 2 * rowBytes, a0, a1, a2, a3, da);
      acc3 = q8_step(acc3, w0 + 3 * rowBytes, a0, a1, a2, a3, da);
      w0 += 34;
    }
    const o = out + (<usize>r << 2);
    store<f32>(o, hsum(acc0));
    store<f32>(o, hsum(acc1), 4);
    store<f32>(o, hsum(acc2), 8);
    store<f32>(o, hsum(acc3), 12);
  }
  for (; r < rows; r++) {
    let w0 = w + <usize>r * rowBytes;
    let acc = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const a = a16 + (<usize>b << 6);
      acc = q8_step(acc, w0, v128.load(a), v128.load(a, 16), v128.load(a, 32), v128.load(a, 48), load<f32>(ad + (<usize>b << 2)));
      w0 += 34;
    }
    store<f32>(out + (<usize>r << 2), hsum(acc));
  }
}

// f16 → f32 without the × 2^112 of f16_to_f32: (h << 16) >>s 3, masked, is h's sign, exponent
// and mantissa in f32's fields with the exponent bias still 15, i.e. the value × 2^-112, exact
// for every f16 (subnormals included). The other factor of each product is multiplied by 2^112
// instead (exact: the query is rounded to f16 so |q| < 2^16, probabilities are ≤ 1), so every
// product, and everything summed from it, is bit-identical to attention()'s.
// @ts-ignore: decorator
@inline function f16x4_lo(h8: v128): v128 {
  const x = v128.shuffle<u8>(i32x4.splat(0), h8, 0, 0, 16, 17, 0, 0, 18, 19, 0, 0, 20, 21, 0, 0, 22, 23);
  return v128.and(i32x4.shr_s(x, 3), i32x4.splat(0x8fffe000));
}
// @ts-ignore: decorator
@inline function f16x4_hi(h8: v128): v128 {
  const x = v128.shuffle<u8>(i32x4.splat(0), h8, 0, 0, 24, 25, 0, 0, 26, 27, 0, 0, 28, 29, 0, 0, 30, 31);
  return v128.and(i32x4.shr_s(x, 3), i32x4.splat(0x8fffe000));
}

const TWO112: f32 = reinterpret<f32>(0x77800000);

/**
 * attention() (attention.ts), same arguments and results. qs: f32 (headDim) scratch for one
 * head's query × 2^112. headDim a multiple of 8.
 */
export function attention_fast(q: usize, kc: usize, vc: usize, n: i32, nHeads: i32, nKV: i32, headDim: i32, scale: f32, scores: usize, out: usize, qs: usize): void {
  const group = nHeads / nKV;
  const stride = <usize>(nKV * headDim) << 1; // bytes per cache slot
  const two112 = f32x4.splat(TWO112);
  for (let h = 0; h < nHeads; h++) {
    const qh = q + (<usize>(h * headDim) << 2);
    const kvOff = <usize>((h / group) * headDim) << 1;
    for (let d = 0; d < headDim; d += 4) v128.store(qs + (<usize>d << 2), f32x4.mul(v128.load(qh + (<usize>d << 2)), two112));
    // scores: acc lane j sums q[d + j]·k[d + j] over d = 0, 4, 8, … in order, as attention()
    for (let t = 0; t < n; t++) {
      const k = kc + <usize>t * stride + kvOff;
      let acc = f32x4.splat(0);
      for (let d = 0; d < headDim; d += 8) {
        const h8 = v128.load(k + (<usize>d << 1));
        acc = f32x4.add(acc, f32x4.mul(v128.load(qs + (<usize>d << 2)), f16x4_lo(h8)));
        acc = f32x4.add(acc, f32x4.mul(v128.load(qs + (<usize>d << 2), 16), f16x4_hi(h8)));
      }
      store<f32>(scores + (<usize>t << 2), hsum(acc) * scale);
    }
    softmax(scores, n);
    // out[d] = Σ_t p_t·v_t[d], t in order from +0, as attention(); 16 dims at a time in registers
    const oh = out + (<usize>(h * headDim) << 2);
    let d = 0;
    for (; d + 16 <= headDim; d += 16) {
      let o0 = f32x4.splat(0), o1 = o0, o2 = o0, o3 = o0;
      let v = vc + kvOff + (<usize>d << 1);
      for (let t = 0; t < n; t++) {
        const p = f32x4.mul(f32x4.splat(load<f32>(scores + (<usize>t << 2))), two112);
        const h0 = v128.load(v), h1 = v128.load(v, 16);
        o0 = f32x4.add(o0, f32x4.mul(p, f16x4_lo(h0)));
        o1 = f32x4.add(o1, f32x4.mul(p, f16x4_hi(h0)));
        o2 = f32x4.add(o2, f32x4.mul(p, f16x4_lo(h1)));
        o3 = f32x4.add(o3, f32x4.mul(p, f16x4_hi(h1)));
        v += stride;
      }
      const o = oh + (<usize>d << 2);
      v128.store(o, o0); v128.store(o, o1, 16); v128.store(o, o2, 32); v128.store(o, o3, 48);
    }
    for (; d < headDim; d += 8) {
      let o0 = f32x4.splat(0), o1 = o0;
      let v = vc + kvOff + (<usize>d << 1);
      for (let t = 0; t < n; t++) {
        const p = f32x4.mul(f32x4.splat(load<f32>(scores + (<usize>t << 2))), two112);
        const h0 = v128.load(v);
        o0 = f32x4.add(o0, f32x4.mul(p, f16x4_lo(h0)));
        o1 = f32x4.add(o1, f32x4.mul(p, f16x4_hi(h0)));
        v += stride;
      }
      const o = oh + (<usize>d << 2);
      v128.store(o, o0); v128.store(o, o1, 16);
    }
  }
}
