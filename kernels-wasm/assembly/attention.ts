// Decode attention with GQA over an f16 KV cache (one query token).
//   q:      f32 (nHeads, headDim)
//   kc, vc: f16 (n, nKV · headDim)  the n valid cache slots (sink + window; order is irrelevant)
//   scores: f32 (n) scratch
//   out:    f32 (nHeads, headDim)
// Head h reads KV head h / (nHeads / nKV). softmax(q·k · scale) · V. The caller rounds q to
// f16 first (round_f16_row) to match llama.cpp, whose K·q runs in f16.
import { f16_to_f32, round_f16 } from "./f16";
import { hsum } from "./matvec-simd";

// @ts-ignore: decorator
@inline function load_f16x4(p: usize): v128 {
  const h = v128.load16x4_u(p);
  const bits = v128.or(i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16), i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13));
  return f32x4.mul(bits, f32x4.splat(reinterpret<f32>(0x77800000)));
}

/** softmax in place over n scores. Probabilities are rounded to f16, as llama.cpp (no flash
 *  attention) converts them before multiplying with the f16 V cache. */
// @ts-ignore: decorator
@inline export function softmax(scores: usize, n: i32): void {
  let mx: f32 = -Infinity;
  for (let i = 0; i < n; i++) mx = Mathf.max(mx, load<f32>(scores + (<usize>i << 2)));
  let sum: f64 = 0;
  for (let i = 0; i < n; i++) {
    const e = Mathf.exp(load<f32>(scores + (<usize>i << 2)) - mx);
    store<f32>(scores + (<usize>i << 2), e);
    sum += e;
  }
  const inv = <f32>(1 / sum);
  for (let i = 0; i < n; i++) store<f32>(scores + (<usize>i << 2), round_f16(load<f32>(scores + (<usize>i << 2)) * inv));
}

export function attention(q: usize, kc: usize, vc: usize, n: i32, nHeads: i32, nKV: i32, headDim: i32, scale: f32, scores: usize, out: usize): void {
  const group = nHeads / nKV;
  const stride = <usize>(nKV * headDim) << 1; // bytes per cache slot
  for (let h = 0; h < nHeads; h++) {
    const qh = q + (<usize>(h * headDim) << 2);
    const kvOff = <usize>((h / group) * headDim) << 1;
    for (let t = 0; t < n; t++) {
      const k = kc + <usize>t * stride + kvOff;
      let acc = f32x4.splat(0);
      for (let d = 0; d < headDim; d += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(qh + (<usize>d << 2)), load_f16x4(k + (<usize>d << 1))));
      store<f32>(scores + (<usize>t << 2), hsum(acc) * scale);
    }
    softmax(scores, n);
    const oh = out + (<usize>(h * headDim) << 2);
    for (let d = 0; d < headDim; d += 4) v128.store(oh + (<usize>d << 2), f32x4.splat(0));
    for (let t = 0; t < n; t++) {
      const p = f32x4.splat(load<f32>(scores + (<usize>t << 2)));
      const v = vc + <usize>t * stride + kvOff;
      for (let d = 0; d < headDim; d += 4) {
        const o = oh + (<usize>d << 2);
        v128.store(o, f32x4.add(v128.load(o), f32x4.mul(p, load_f16x4(v + (<usize>d << 1)))));
      }
    }
  }
}

/** Scalar reference of attention(). */
export function attention_ref(q: usize, kc: usize, vc: usize, n: i32, nHeads: i32, nKV: i32, headDim: i32, scale: f32, scores: usize, out: usize): void {
  const group = nHeads / nKV;
  const stride = <usize>(nKV * headDim) << 1;
  for (let h = 0; h < nHeads; h++) {
    const qh = q + (<usize>(h * headDim) << 2);
    const kvOff = <usize>((h / group) * headDim) << 1;
    for (let t = 0; t < n; t++) {
      const k = kc + <usize>t * stride + kvOff;
      let s: f32 = 0;
      for (let d = 0; d < headDim; d++) s += load<f32>(qh + (<usize>d << 2)) * f16_to_f32(load<u16>(k + (<usize>d << 1)));
      store<f32>(scores + (<usize>t << 2), s * scale);
    }
    softmax(scores, n);
    const oh = out + (<usize>(h * headDim) << 2);
    for (let d = 0; d < headDim; d++) {
      let s: f32 = 0;
      for (let t = 0; t < n; t++) s += load<f32>(scores + (<usize>t << 2)) * f16_to_f32(load<u16>(vc + <usize>t * stride + kvOff + (<usize>d << 1)));
      store<f32>(oh + (<usize>d << 2), s);
    }
  }
}
