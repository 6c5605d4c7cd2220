// Relaxed-SIMD ceiling for the benchmark: register-resident relaxed_dot (16 MACs each).
export function peak_dot_relaxed(iters: i32): i32 {
  let a = i8x16.splat(3);
  const b = i8x16.splat(5);
  let s0 = i32x4.splat(0), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (let i = 0; i < iters; i++) {
    s0 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s0); s1 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s1);
    s2 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s2); s3 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s3);
    s4 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s4); s5 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s5);
    s6 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s6); s7 = i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, s7);
    a = i8x16.add(a, i8x16.splat(1));
  }
  const s = i32x4.add(i32x4.add(i32x4.add(s0, s1), i32x4.add(s2, s3)), i32x4.add(i32x4.add(s4, s5), i32x4.add(s6, s7)));
  return i32x4.extract_lane(s, 0);
}
