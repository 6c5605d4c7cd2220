// Ceilings for the benchmark (bench/wasm_bench.mjs), not used by the model.

/** Register-resident i16 dots (8 independent chains): MACs/s ceiling of the SIMD128 path. Returns a sink. */
export function peak_dot_i16(iters: i32): i32 {
  let a = i16x8.splat(3), b = i16x8.splat(5);
  let s0 = i32x4.splat(0), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (let i = 0; i < iters; i++) {
    s0 = i32x4.add(s0, i32x4.dot_i16x8_s(a, b)); s1 = i32x4.add(s1, i32x4.dot_i16x8_s(b, a));
    s2 = i32x4.add(s2, i32x4.dot_i16x8_s(a, a)); s3 = i32x4.add(s3, i32x4.dot_i16x8_s(b, b));
    s4 = i32x4.add(s4, i32x4.dot_i16x8_s(a, b)); s5 = i32x4.add(s5, i32x4.dot_i16x8_s(b, a));
    s6 = i32x4.add(s6, i32x4.dot_i16x8_s(a, a)); s7 = i32x4.add(s7, i32x4.dot_i16x8_s(b, b));
    a = i16x8.add(a, i16x8.splat(1));
  }
  const s = i32x4.add(i32x4.add(i32x4.add(s0, s1), i32x4.add(s2, s3)), i32x4.add(i32x4.add(s4, s5), i32x4.add(s6, s7)));
  return i32x4.extract_lane(s, 0);
}

/** Copies n bytes from src to dst `reps` times: memory bandwidth ceiling. */
export function copy_bytes(dst: usize, src: usize, n: usize, reps: i32): void {
  for (let r = 0; r < reps; r++) memory.copy(dst, src, n);
}
