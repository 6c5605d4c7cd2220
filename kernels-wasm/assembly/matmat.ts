// Weights × several activation vectors (batched prompt prefill), by row tiles: the matvec the
// model decodes with runs over one tile of rows (~32 KiB of weights) for every token before the
// next tile, so each weight byte comes from memory once per batch instead of once per token,
// and each token's output is bit-identical to that matvec's by construction (same kernel, same
// rows; a row's arithmetic does not depend on its neighbours). Tests: test/matmat.test.ts.
//
// Layout, for nTok tokens of a cols-long input (as quantize_q8 writes token j at offset j·cols):
//   a:      i16 (nTok, cols) a16p (SIMD128 Q4) or a16 (Q8_0); i8 (nTok, cols) aq (relaxed Q4)
//   ad, as: f32 (nTok, cols/32)  block scales and d·Σq
//   out:    f32 (nTok, rows)
import { matvec_q4_1, matvec_q4_0, matvec_q8_0 } from "./matvec-simd";

const TILE_BYTES: i32 = 32768;
export const KIND_Q4_1: i32 = 0, KIND_Q4_0: i32 = 1, KIND_Q8_0: i32 = 2;

// @ts-ignore: decorator
@inline export function tile_rows(rowBytes: i32): i32 {
  return max(2, (TILE_BYTES / rowBytes) & ~1);
}

// @ts-ignore: decorator
@inline function tiled(kind: i32, w: usize, rows: i32, cols: i32, a: usize, aBytes: i32, ad: usize, as_: usize, out: usize, nTok: i32, blockBytes: i32): void {
  const nb = cols >> 5;
  const rowBytes = nb * blockBytes;
  const R = tile_rows(rowBytes);
  const aStride = <usize>(cols * aBytes), sStride = <usize>nb << 2, oStride = <usize>rows << 2;
  for (let r0 = 0; r0 < rows; r0 += R) {
    const n = min(R, rows - r0);
    const wt = w + <usize>r0 * rowBytes, ot = out + (<usize>r0 << 2);
    for (let j = 0; j < nTok; j++) {
      const aj = a + <usize>j * aStride, dj = ad + <usize>j * sStride, sj = as_ + <usize>j * sStride, oj = ot + <usize>j * oStride;
      if (kind == KIND_Q4_1) matvec_q4_1(wt, n, cols, aj, dj, sj, oj);
      else if (kind == KIND_Q4_0) matvec_q4_0(wt, n, cols, aj, dj, sj, oj);
      else matvec_q8_0(wt, n, cols, aj, dj, oj);
    }
  }
}

/** matvec_q4_1 (SIMD128) for nTok tokens. a16p: i16 (nTok, cols). */
export function matmat_q4_1(w: usize, rows: i32, cols: i32, a16p: usize, ad: usize, as_: usize, out: usize, nTok: i32): void {
  tiled(KIND_Q4_1, w, rows, cols, a16p, 2, ad, as_, out, nTok, 20);
}
/** matvec_q4_0 (SIMD128) for nTok tokens. a16p: i16 (nTok, cols). */
export function matmat_q4_0(w: usize, rows: i32, cols: i32, a16p: usize, ad: usize, as_: usize, out: usize, nTok: i32): void {
  tiled(KIND_Q4_0, w, rows, cols, a16p, 2, ad, as_, out, nTok, 18);
}
/** matvec_q8_0 for nTok tokens. a16: i16 (nTok, cols). */
export function matmat_q8_0(w: usize, rows: i32, cols: i32, a16: usize, ad: usize, out: usize, nTok: i32): void {
  tiled(KIND_Q8_0, w, rows, cols, a16, 2, ad, 0, out, nTok, 34);
}
