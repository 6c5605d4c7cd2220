// Activations → int8 blocks of 32, as llama.cpp's quantize_row_q8_1 (x86 path) does, so the
// integer dot products match it: d = f16(amax/127), q = round_even(x·127/amax), s = f16(d·Σq).
// Layout (n = multiple of 32):
//   aq: i8  (n)        quantized values
//   a16: i16 (n)       the same, widened (SIMD128 Q8_0 kernel: no per-row extends)
//   a16p: i16 (n)      widened and permuted per block to the order SIMD128 unpacks Q4 nibbles:
//                      [0,2,..,14 | 1,3,..,15 | 16,18,..,30 | 17,19,..,31]
//   ad: f32 (n / 32)   block scale d (already rounded to f16)
//   as: f32 (n / 32)   d · Σq (rounded to f16), used by Q4_1's min term and Q4_0's -8 offset
import { round_f16 } from "./f16";

export function quantize_q8(x: usize, n: i32, aq: usize, a16: usize, a16p: usize, ad: usize, as_: usize): void {
  const nb = n >> 5;
  for (let b = 0; b < nb; b++) {
    const xb = x + (<usize>b << 7);
    let amax: f32 = 0;
    for (let j = 0; j < 32; j++) amax = Mathf.max(amax, Mathf.abs(load<f32>(xb + (<usize>j << 2))));
    const d: f32 = amax / 127;
    const id: f32 = amax != 0 ? <f32>127 / amax : 0;
    let sum: i32 = 0;
    for (let j = 0; j < 32; j++) {
      const q = <i32>nearest<f32>(load<f32>(xb + (<usize>j << 2)) * id);
      store<i8>(aq + (<usize>b << 5) + j, <i8>q);
      store<i16>(a16 + (<usize>((b << 5) + j) << 1), <i16>q);
      // element j → lane: even j < 16 → j/2; odd j < 16 → 8 + j/2; then the same for 16..31
      const lane = (j & 16) + ((j & 1) << 3) + ((j & 15) >> 1);
      store<i16>(a16p + (<usize>((b << 5) + lane) << 1), <i16>q);
      sum += q;
    }
    store<f32>(ad + (<usize>b << 2), round_f16(d));
    store<f32>(as_ + (<usize>b << 2), round_f16(d * <f32>sum));
  }
}
