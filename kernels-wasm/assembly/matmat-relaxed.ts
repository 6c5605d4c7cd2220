// Relaxed-SIMD build of matmat.ts: the relaxed 4-bit matvecs over row tiles, each token's output
// bit-identical to matvec_q4_1_relaxed / matvec_q4_0_relaxed. aq: i8 (nTok, cols).
import { matvec_q4_1_relaxed, matvec_q4_0_relaxed } from "./matvec-relaxed";
import { tile_rows } from "./matmat";

// @ts-ignore: decorator
@inline function tiled_relaxed(q4_1: bool, w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize, nTok: i32): void {
  const nb = cols >> 5;
  const rowBytes = nb * (q4_1 ? 20 : 18);
  const R = tile_rows(rowBytes);
  const sStride = <usize>nb << 2, oStride = <usize>rows << 2;
  for (let r0 = 0; r0 < rows; r0 += R) {
    const n = min(R, rows - r0);
    const wt = w + <usize>r0 * rowBytes, ot = out + (<usize>r0 << 2);
    for (let j = 0; j < nTok; j++) {
      const aj = aq + <usize>j * <usize>cols, dj = ad + <usize>j * sStride, sj = as_ + <usize>j * sStride, oj = ot + <usize>j * oStride;
      if (q4_1) matvec_q4_1_relaxed(wt, n, cols, aj, dj, sj, oj);
      else matvec_q4_0_relaxed(wt, n, cols, aj, dj, sj, oj);
    }
  }
}

export function matmat_q4_1_relaxed(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize, nTok: i32): void {
  tiled_relaxed(true, w, rows, cols, aq, ad, as_, out, nTok);
}
export function matmat_q4_0_relaxed(w: usize, rows: i32, cols: i32, aq: usize, ad: usize, as_: usize, out: usize, nTok: i32): void {
  tiled_relaxed(false, w, rows, cols, aq, ad, as_, out, nTok);
}
