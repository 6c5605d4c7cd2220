// Decode attention with GQA over an f16 KV cache (one query token).
//   q:      f32 (nHeads, headDim)
//   kc, vc: f16 (n, nKV · headDim)  the n valid cache slots (sink + window; order is irrelevant)
//   scores: f32 (n) scratch
//   out:    f32 (nHeads, headDim)
// Head h reads KV head h / (nHeads / nKV). softmax(q·k · scale) · V. The caller rounds q to
// f16 first (round_f16_row) to match llama.cpp, whose K·q runs in f16.
import { f16_to_f32, round_f16 } from "./f16";
import { expf_ggml, reduce16 } from "./ggml-math";

// @ts-ignore: decorator
@inline function load_f16x4(p: usize): v128 {
  const h = v128.load16x4_u(p);
  const bits = v128.or(i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16), i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13));
  return f32x4.mul(bits, f32x4.splat(reinterpret<f32>(0x77800000)));
}

/** exp, chunk sums and 1/Σ of ggml_vec_soft_max_f32 + ggml_soft_max (AVX-512): exp by
 *  ggml_v_expf, the sum over chunks of 16 cells (each chunk's f32 _mm512_reduce_add_ps, added in
 *  f64), probabilities val · f32(1/Σ). Then rounded to f16, as llama.cpp (no flash attention)
 *  converts them before multiplying with the f16 V cache. In place over n scores. */
// @ts-ignore: decorator
@inline export function softmax(scores: usize, n: i32): void {
  let mx: f32 = -Infinity;
  for (let i = 0; i < n; i++) mx = Mathf.max(mx, load<f32>(scores + (<usize>i << 2)));
  let sum: f64 = 0;
  for (let c = 0; c < n; c += 16) {
    for (let l = 0; l < 16; l++) {
      const i = c + l;
      let e: f32 = 0;
      if (i < n) { e = expf_ggml(load<f32>(scores + (<usize>i << 2)) - mx); store<f32>(scores + (<usize>i << 2), e); }
      store<f32>(CHUNK + (<usize>l << 2), e);
    }
    sum += <f64>reduce16(v128.load(CHUNK), v128.load(CHUNK, 16), v128.load(CHUNK, 32), v128.load(CHUNK, 48));
  }
  const inv = <f32>(1 / sum);
  for (let i = 0; i < n; i++) store<f32>(scores + (<usize>i << 2), round_f16(load<f32>(scores + (<usize>i << 2)) * inv));
}

const CHUNK: usize = memory.data(64, 16);
/** P·V lane accumulators: 64 slots (cell t goes to slot t mod 64) × headDim ≤ 256. */
const PV: usize = memory.data(64 * 256 * 4, 16);
/** Scalar scratch of the references: 64 K·q lanes. */
const KQ: usize = memory.data(64 * 4, 16);

/**
 * q·k as ggml_vec_dot_f16 (AVX-512 with F32 accumulation): element i of each 64-element step
 * goes to lane i mod 64 (four 16-lane accumulators), lanes summed (acc0 + acc2) + (acc1 + acc3)
 * then by _mm512_reduce_add_ps; elements past the last full step are added in f64. Products of
 * two f16 values are exact in f32, so the FMAs are plain adds.
 */
// @ts-ignore: decorator
@inline function dot_kq(qh: usize, k: usize, headDim: i32): f32 {
  const np = headDim & ~63;
  let res: f32 = 0;
  if (np > 0) {
    let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    let a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (let i = 0; i < np; i += 64) {
      const q = qh + (<usize>i << 2), kk = k + (<usize>i << 1);
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q), load_f16x4(kk)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q, 16), load_f16x4(kk + 8)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q, 32), load_f16x4(kk + 16)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q, 48), load_f16x4(kk + 24)));
      a4 = f32x4.add(a4, f32x4.mul(v128.load(q, 64), load_f16x4(kk + 32)));
      a5 = f32x4.add(a5, f32x4.mul(v128.load(q, 80), load_f16x4(kk + 40)));
      a6 = f32x4.add(a6, f32x4.mul(v128.load(q, 96), load_f16x4(kk + 48)));
      a7 = f32x4.add(a7, f32x4.mul(v128.load(q, 112), load_f16x4(kk + 56)));
      a8 = f32x4.add(a8, f32x4.mul(v128.load(q, 128), load_f16x4(kk + 64)));
      a9 = f32x4.add(a9, f32x4.mul(v128.load(q, 144), load_f16x4(kk + 72)));
      a10 = f32x4.add(a10, f32x4.mul(v128.load(q, 160), load_f16x4(kk + 80)));
      a11 = f32x4.add(a11, f32x4.mul(v128.load(q, 176), load_f16x4(kk + 88)));
      a12 = f32x4.add(a12, f32x4.mul(v128.load(q, 192), load_f16x4(kk + 96)));
      a13 = f32x4.add(a13, f32x4.mul(v128.load(q, 208), load_f16x4(kk + 104)));
      a14 = f32x4.add(a14, f32x4.mul(v128.load(q, 224), load_f16x4(kk + 112)));
      a15 = f32x4.add(a15, f32x4.mul(v128.load(q, 240), load_f16x4(kk + 120)));
    }
    // accumulator j = vectors 4j..4j+3; lane l: (acc0 + acc2) + (acc1 + acc3)
    res = reduce16(
      f32x4.add(f32x4.add(a0, a8), f32x4.add(a4, a12)), f32x4.add(f32x4.add(a1, a9), f32x4.add(a5, a13)),
      f32x4.add(f32x4.add(a2, a10), f32x4.add(a6, a14)), f32x4.add(f32x4.add(a3, a11), f32x4.add(a7, a15)));
  }
  if (np == headDim) return res;
  let sumf = <f64>res;
  for (let i = np; i < headDim; i++) sumf += <f64>(load<f32>(qh + (<usize>i << 2)) * f16_to_f32(load<u16>(k + (<usize>i << 1))));
  return <f32>sumf;
}

/**
 * llama.cpp's order (ggml_vec_dot_f16 over the cache cells, n_kv padded to a multiple of 64):
 * out[d] = Σ_t p_t·v_t[d] with cell t in lane t mod 64, each lane summed over t in order, then
 * the lanes reduced as in dot_kq. headDim a multiple of 4, ≤ 256.
 */
export function attention(q: usize, kc: usize, vc: usize, n: i32, nHeads: i32, nKV: i32, headDim: i32, scale: f32, scores: usize, out: usize): void {
  if (headDim > 256 || (headDim & 3) != 0) unreachable();
  const group = nHeads / nKV;
  const stride = <usize>(nKV * headDim) << 1; // bytes per cache slot
  const row = <usize>headDim << 2; // bytes per PV slot
  const slots = n < 64 ? n : 64;
  for (let h = 0; h < nHeads; h++) {
    const qh = q + (<usize>(h * headDim) << 2);
    const kvOff = <usize>((h / group) * headDim) << 1;
    for (let t = 0; t < n; t++) store<f32>(scores + (<usize>t << 2), dot_kq(qh, kc + <usize>t * stride + kvOff, headDim) * scale);
    softmax(scores, n);
    // slots a cell never reaches stay 0; each slot's first cell is 0 + p·v
    if (slots < 64) memory.fill(PV + <usize>slots * row, 0, <usize>(64 - slots) * row);
    const zero = f32x4.splat(0);
    for (let t = 0; t < n; t++) {
      const p = f32x4.splat(load<f32>(scores + (<usize>t << 2)));
      const v = vc + <usize>t * stride + kvOff;
      const acc = PV + <usize>(t & 63) * row;
      if (t < 64) {
        for (let d = 0; d < headDim; d += 4) v128.store(acc + (<usize>d << 2), f32x4.add(zero, f32x4.mul(p, load_f16x4(v + (<usize>d << 1)))));
      } else {
        for (let d = 0; d < headDim; d += 4) {
          const o = acc + (<usize>d << 2);
          v128.store(o, f32x4.add(v128.load(o), f32x4.mul(p, load_f16x4(v + (<usize>d << 1)))));
        }
      }
    }
    const oh = out + (<usize>(h * headDim) << 2);
    for (let d = 0; d < headDim; d += 4) {
      const c = PV + (<usize>d << 2);
      // x_l = (slot l + slot 32+l) + (slot 16+l + slot 48+l), then the 16-lane tree over l
      let x0 = f32x4.splat(0), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0;
      let x8 = x0, x9 = x0, x10 = x0, x11 = x0, x12 = x0, x13 = x0, x14 = x0, x15 = x0;
      x0 = lane_x(c, row, 0); x1 = lane_x(c, row, 1); x2 = lane_x(c, row, 2); x3 = lane_x(c, row, 3);
      x4 = lane_x(c, row, 4); x5 = lane_x(c, row, 5); x6 = lane_x(c, row, 6); x7 = lane_x(c, row, 7);
      x8 = lane_x(c, row, 8); x9 = lane_x(c, row, 9); x10 = lane_x(c, row, 10); x11 = lane_x(c, row, 11);
      x12 = lane_x(c, row, 12); x13 = lane_x(c, row, 13); x14 = lane_x(c, row, 14); x15 = lane_x(c, row, 15);
      // T3_i = x_i + x_{i+8}; T6_i = T3_i + T3_{i+4}; (T6_0 + T6_2) + (T6_1 + T6_3)
      const t0 = f32x4.add(f32x4.add(x0, x8), f32x4.add(x4, x12));
      const t1 = f32x4.add(f32x4.add(x1, x9), f32x4.add(x5, x13));
      const t2 = f32x4.add(f32x4.add(x2, x10), f32x4.add(x6, x14));
      const t3 = f32x4.add(f32x4.add(x3, x11), f32x4.add(x7, x15));
      v128.store(oh + (<usize>d << 2), f32x4.add(f32x4.add(t0, t2), f32x4.add(t1, t3)));
    }
  }
}

// @ts-ignore: decorator
@inline function lane_x(c: usize, row: usize, l: i32): v128 {
  return f32x4.add(f32x4.add(v128.load(c + <usize>l * row), v128.load(c + <usize>(l + 32) * row)),
                   f32x4.add(v128.load(c + <usize>(l + 16) * row), v128.load(c + <usize>(l + 48) * row)));
}

/** Scalar reference of attention(): the same float operations, one at a time. */
export function attention_ref(q: usize, kc: usize, vc: usize, n: i32, nHeads: i32, nKV: i32, headDim: i32, scale: f32, scores: usize, out: usize): void {
  const group = nHeads / nKV;
  const stride = <usize>(nKV * headDim) << 1;
  for (let h = 0; h < nHeads; h++) {
    const qh = q + (<usize>(h * headDim) << 2);
    const kvOff = <usize>((h / group) * headDim) << 1;
    const np = headDim & ~63;
    for (let t = 0; t < n; t++) {
      const k = kc + <usize>t * stride + kvOff;
      for (let l = 0; l < 64; l++) store<f32>(KQ + (<usize>l << 2), 0);
      for (let i = 0; i < np; i++) {
        const a = KQ + (<usize>(i & 63) << 2);
        store<f32>(a, load<f32>(a) + load<f32>(qh + (<usize>i << 2)) * f16_to_f32(load<u16>(k + (<usize>i << 1))));
      }
      let sumf: f64 = np > 0 ? <f64>tree64(KQ, 4) : 0;
      for (let i = np; i < headDim; i++) sumf += <f64>(load<f32>(qh + (<usize>i << 2)) * f16_to_f32(load<u16>(k + (<usize>i << 1))));
      store<f32>(scores + (<usize>t << 2), <f32>sumf * scale);
    }
    softmax(scores, n);
    const oh = out + (<usize>(h * headDim) << 2);
    for (let d = 0; d < headDim; d++) {
      for (let l = 0; l < 64; l++) store<f32>(KQ + (<usize>l << 2), 0);
      for (let t = 0; t < n; t++) {
        const a = KQ + (<usize>(t & 63) << 2);
        store<f32>(a, load<f32>(a) + load<f32>(scores + (<usize>t << 2)) * f16_to_f32(load<u16>(vc + <usize>t * stride + kvOff + (<usize>d << 1))));
      }
      store<f32>(oh + (<usize>d << 2), tree64(KQ, 4));
    }
  }
}

/** The 64 lanes at p (stride bytes apart) reduced as ggml's F32x16 REDUCE + _mm512_reduce_add_ps. */
function tree64(p: usize, stride: usize): f32 {
  for (let l = 0; l < 16; l++) {
    const x = (load<f32>(p + <usize>l * stride) + load<f32>(p + <usize>(l + 32) * stride))
            + (load<f32>(p + <usize>(l + 16) * stride) + load<f32>(p + <usize>(l + 48) * stride));
    store<f32>(CHUNK + (<usize>l << 2), x);
  }
  let t6_0: f32 = 0, t6_1: f32 = 0, t6_2: f32 = 0, t6_3: f32 = 0;
  for (let i = 0; i < 4; i++) {
    const t3a = lx(i) + lx(i + 8), t3b = lx(i + 4) + lx(i + 12); // T3_i, T3_{i+4}
    const t6 = t3a + t3b;
    if (i == 0) t6_0 = t6; else if (i == 1) t6_1 = t6; else if (i == 2) t6_2 = t6; else t6_3 = t6;
  }
  return (t6_0 + t6_2) + (t6_1 + t6_3);
}

// @ts-ignore: decorator
@inline function lx(l: i32): f32 {
  return load<f32>(CHUNK + (<usize>l << 2));
}
