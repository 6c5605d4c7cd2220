// Scalar float operations exactly as llama.cpp's x86 CPU build (ggml-cpu, -march=native on an
// AVX-512 machine, GCC -ffp-contract=fast) computes them, so greedy tokens match bit for bit.
// Greedy decoding of a quantized model is chaotic: one int8 activation rounded the other way
// changes later roundings too, so "close" float math drifts to ~0.1 logit apart within a few
// layers. Matching llama.cpp therefore means the same f32 operations in the same order.

/** Fused multiply-add in f32, a·b + c rounded once (x86 vfmadd). The product of two f32 is exact
 *  in f64; the f64 sum then rounds twice (f64, then f32), which differs from one rounding only
 *  when the f64 sum lands exactly on an f32 halfway point: never for the sums here in practice. */
// @ts-ignore: decorator
@inline export function fma32(a: f32, b: f32, c: f32): f32 {
  return <f32>(<f64>a * <f64>b + <f64>c);
}

// ggml_v_expf (ggml-cpu/vec.h, AVX-512 version, an ARM optimized-routines port): exp(x) with
// ~1.5 ulp error. Constants as f32 bit patterns.
const R: f32 = reinterpret<f32>(0x4b400000);   // 0x1.8p23
const LOG2E: f32 = reinterpret<f32>(0x3fb8aa3b); // 0x1.715476p+0
const LN2_LO: f32 = reinterpret<f32>(0x35bfbe8e); // 0x1.7f7d1cp-20
const LN2_HI: f32 = reinterpret<f32>(0x3f317200); // 0x1.62e4p-1
const C5: f32 = reinterpret<f32>(0x3c072010);
const C4: f32 = reinterpret<f32>(0x3d2b9f17);
const C3: f32 = reinterpret<f32>(0x3e2aaf33);
const C2: f32 = reinterpret<f32>(0x3efffedb);
const C1: f32 = reinterpret<f32>(0x3f7ffff6);

/** exp(x) as ggml_v_expf (AVX-512) computes each lane. */
export function expf_ggml(x: f32): f32 {
  const z = fma32(x, LOG2E, R);
  const n = z - R;
  const b = fma32(-n, LN2_LO, fma32(-n, LN2_HI, x));
  if (Mathf.abs(n) > 192) return n <= 0 ? 0 : Infinity; // also x = -inf (n = -inf)
  const u = b * b;
  const j = fma32(fma32(fma32(C5, b, C4), u, fma32(C3, b, C2)), u, fma32(C1, b, 1));
  // _mm512_scalef_ps(j, n) = j·2^n, rounded once (n is an integer in [-192, 192]).
  return <f32>(<f64>j * reinterpret<f64>(<u64>(1023 + <i32>n) << 52));
}

/** silu(x) = x / (1 + exp(-x)) as ggml_v_silu (AVX-512). */
// @ts-ignore: decorator
@inline export function silu_ggml(x: f32): f32 {
  return x / (<f32>1 + expf_ggml(<f32>0 - x));
}

/** Σ of 16 f32 lanes l[0..15] as GCC's _mm512_reduce_add_ps: halves, quarters, then pairs. */
// @ts-ignore: decorator
@inline export function reduce16(v0: v128, v1: v128, v2: v128, v3: v128): f32 {
  // v_k holds lanes 4k..4k+3. T3_i = l_i + l_{i+8} (i < 8); T6_i = T3_i + T3_{i+4} (i < 4);
  // then (T6_0 + T6_2) + (T6_1 + T6_3).
  return hsum_x86(f32x4.add(f32x4.add(v0, v2), f32x4.add(v1, v3)));
}

/** Σ of 4 lanes as (l0 + l2) + (l1 + l3): the last steps of hsum_float_8 / _mm512_reduce_add_ps. */
// @ts-ignore: decorator
@inline export function hsum_x86(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 2)) + (f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 3));
}
