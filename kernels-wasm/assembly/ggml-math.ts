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

// glibc's sinf/cosf (2.28+, the ARM optimized-routines algorithm: double-precision reduction by
// π/2 and polynomials), which ggml's RoPE cache calls. They are not correctly rounded (≈ 2.5% of
// RoPE angles differ by one ulp from the nearest f32), so matching llama.cpp means computing them
// the same way: every double operation below in glibc's order, no FMA (its results equal the
// plain-double evaluation on every RoPE angle of 4 base/head-dim shapes × 8192 positions, checked
// against this machine's libm). Coefficients: glibc's sincosf table, as stored in its libm.
const SC_HPI_INV: f64 = reinterpret<f64>(0x41645f306dc9c883); // 2^24 · 2/π
const SC_HPI: f64 = reinterpret<f64>(0x3ff921fb54442d18); // π/2
const SC_PI63: f64 = reinterpret<f64>(0x3c1921fb54442d18); // π · 2^-62
const SC_C1: f64 = reinterpret<f64>(0xbfdffffffd0c621c);
const SC_C2: f64 = reinterpret<f64>(0x3fa55553e1068f19);
const SC_C3: f64 = reinterpret<f64>(0xbf56c087e89a359d);
const SC_C4: f64 = reinterpret<f64>(0x3ef99343027bf8c3);
const SC_S1: f64 = reinterpret<f64>(0xbfc555545995a603);
const SC_S2: f64 = reinterpret<f64>(0x3f81107605230bc4);
const SC_S3: f64 = reinterpret<f64>(0xbf2994eb3774cf24);
/** 4/π in overlapping 32-bit windows, 8 new bits per entry. */
const INV_PIO4: usize = memory.data<u32>([
  0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529,
  0x441529fc, 0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0,
  0x34ddc0db, 0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
]);

// @ts-ignore: decorator
@inline function abstop12(y: f32): u32 {
  return (reinterpret<u32>(y) >> 20) & 0x7ff;
}

/** sin (n even) or cos (n odd) polynomial on the reduced argument; negCos: quadrants 2 and 3. */
function sincos_poly(x: f64, x2: f64, negCos: bool, n: i32): f32 {
  if ((n & 1) == 0) {
    const x3 = x * x2;
    const s1 = SC_S2 + x2 * SC_S3;
    const x7 = x3 * x2;
    const s = x + x3 * SC_S1;
    return <f32>(s + x7 * s1);
  }
  const k: f64 = negCos ? -1 : 1;
  const x4 = x2 * x2;
  const c2 = k * SC_C3 + x2 * (k * SC_C4);
  const c1 = k + x2 * (k * SC_C1);
  const x6 = x4 * x2;
  const c = c1 + x4 * (k * SC_C2);
  return <f32>(c + x6 * c2);
}

/** sinf(y) (cos = false) or cosf(y) (cos = true) as glibc computes them. */
export function sincosf_glibc(y: f32, cos: bool): f32 {
  let x = <f64>y;
  if (abstop12(y) < abstop12(reinterpret<f32>(0x3f490fdb))) { // |y| < π/4
    if (abstop12(y) < abstop12(reinterpret<f32>(0x39800000))) return cos ? 1 : y; // |y| < 2^-12
    return sincos_poly(x, x * x, false, cos ? 1 : 0);
  }
  let n: i32, q: i32;
  if (abstop12(y) < abstop12(120)) {
    n = (<i32>(x * SC_HPI_INV) + 0x800000) >> 24;
    x = x - <f64>n * SC_HPI;
    q = n;
  } else if (abstop12(y) < abstop12(Infinity)) {
    let xi = reinterpret<u32>(y);
    const arr = INV_PIO4 + (<usize>((xi >> 26) & 15) << 2);
    const shift = (xi >> 23) & 7;
    xi = ((xi & 0xffffff) | 0x800000) << shift;
    let res0 = <u64>(xi * load<u32>(arr)); // 32-bit product, as in glibc
    const res1 = <u64>xi * <u64>load<u32>(arr, 16);
    const res2 = <u64>xi * <u64>load<u32>(arr, 32);
    res0 = (res2 >> 32) | (res0 << 32);
    res0 += res1;
    const nn = (res0 + (<u64>1 << 61)) >> 62;
    res0 -= nn << 62;
    x = <f64>(<i64>res0) * SC_PI63;
    n = <i32>nn;
    q = n + <i32>(reinterpret<u32>(y) >> 31);
  } else {
    return NaN;
  }
  const s: f64 = ((q & 3) == 1 || (q & 3) == 2) ? -1 : 1; // sign[q & 3] = {1, -1, -1, 1}
  return sincos_poly(x * s, x * x, (q & 2) != 0, cos ? n ^ 1 : n);
}
