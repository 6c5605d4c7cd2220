// The greedy pick over the vocabulary in WASM: a JS loop over 32K–49K logits cost ~0.3 ms per
// token inside workerd (6% of a 15M-shape decode step), this ~0.02 ms. Same index as argmax()
// of src/runtime/sampler.ts (test/argmax.test.ts).

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
