// Element-wise and row ops of the llama forward pass (O(dim) work per token: scalar is enough).
// Numerics follow ggml's CPU ops so greedy tokens match llama.cpp.
import { f16_to_f32, f32_to_f16, round_f16 } from "./f16";
import { fma32, silu_ggml, sincosf_glibc } from "./ggml-math";

/** out = x / sqrt(mean(x²) + eps) · w. Squares in f32 summed in f64, as ggml. x, w, out: f32 (n). */
export function rmsnorm(x: usize, w: usize, out: usize, n: i32, eps: f32): void {
  let ss: f64 = 0;
  for (let i = 0; i < n; i++) { const v = load<f32>(x + (<usize>i << 2)); ss += <f64>(v * v); }
  const scale: f32 = <f32>1 / Mathf.sqrt(<f32>(ss / n) + eps);
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, (load<f32>(x + o) * scale) * load<f32>(w + o));
  }
}

/**
 * RoPE in GGUF's llama layout (ggml "norm" mode: adjacent pairs x[2i], x[2i+1]) on every head
 * of x (nHeads, headDim), as ggml's rope cache: θ_i = pos · s^i accumulated in f32 with
 * s = powf(base, −2/headDim); cosf/sinf; then fma(x0, c, −x1·s) and fma(x0, s, x1·c), the FMAs
 * GCC contracts ggml's rotate_pairs to (checked bit for bit against llama.cpp's tensors).
 * powf is evaluated in f64 and rounded (correctly rounded, as glibc's powf is here); sinf/cosf
 * as glibc computes them (ggml-math.ts), which are not always correctly rounded.
 */
export function rope(x: usize, nHeads: i32, headDim: i32, pos: i32, base: f32): void {
  if (headDim > 512) unreachable();
  const thetaScale = <f32>Math.pow(<f64>base, <f64>(<f32>-2 / <f32>headDim));
  let theta = <f32>pos;
  for (let i = 0; i < headDim; i += 2) {
    store<f32>(ROPE_CACHE + (<usize>i << 2), sincosf_glibc(theta, true));
    store<f32>(ROPE_CACHE + (<usize>i << 2), sincosf_glibc(theta, false), 4);
    theta *= thetaScale;
  }
  for (let h = 0; h < nHeads; h++) {
    const xh = x + (<usize>(h * headDim) << 2);
    for (let i = 0; i < headDim; i += 2) {
      const c = load<f32>(ROPE_CACHE + (<usize>i << 2)), s = load<f32>(ROPE_CACHE + (<usize>i << 2), 4);
      const p = xh + (<usize>i << 2);
      const x0 = load<f32>(p), x1 = load<f32>(p, 4);
      store<f32>(p, fma32(x0, c, -(x1 * s)));
      store<f32>(p, fma32(x0, s, x1 * c), 4);
    }
  }
}

/** cos/sin of one position's θ_i (headDim ≤ 512). */
const ROPE_CACHE: usize = memory.data(512 * 4, 16);

/** gate = silu(gate) · up, f32 (n): ggml_vec_swiglu_f32 (AVX-512 silu, see ggml-math.ts). */
export function silu_mul(gate: usize, up: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(gate + o, silu_ggml(load<f32>(gate + o)) * load<f32>(up + o));
  }
}

/** x += y, f32 (n). */
export function add_inplace(x: usize, y: usize, n: i32): void {
  for (let i = 0; i < n; i += 4) {
    const o = <usize>i << 2;
    v128.store(x + o, f32x4.add(v128.load(x + o), v128.load(y + o)));
  }
}

/** f32 (n) → f16 (n), round to nearest even (KV cache writes). */
export function f32_to_f16_row(x: usize, out: usize, n: i32): void {
  for (let i = 0; i < n; i++) store<u16>(out + (<usize>i << 1), <u16>f32_to_f16(load<f32>(x + (<usize>i << 2))));
}

/**
 * Row `row` of a GGUF matrix (cols wide) dequantized to f32 (cols): embedding lookup.
 * type: ggml type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0).
 */
export function get_row(w: usize, type: i32, row: i32, cols: i32, out: usize): void {
  const nb = cols >> 5;
  if (type == 0) { memory.copy(out, w + (<usize>row * cols << 2), <usize>cols << 2); return; }
  if (type == 1) {
    const r = w + (<usize>row * cols << 1);
    for (let c = 0; c < cols; c++) store<f32>(out + (<usize>c << 2), f16_to_f32(load<u16>(r + (<usize>c << 1))));
    return;
  }
  for (let b = 0; b < nb; b++) {
    const o = out + (<usize>b << 7);
    if (type == 8) {
      const blk = w + (<usize>(row * nb + b)) * 34;
      const d = f16_to_f32(load<u16>(blk));
      for (let j = 0; j < 32; j++) store<f32>(o + (<usize>j << 2), d * <f32>load<i8>(blk + 2 + j));
    } else if (type == 3) {
      const blk = w + (<usize>(row * nb + b)) * 20;
      const d = f16_to_f32(load<u16>(blk)), m = f16_to_f32(load<u16>(blk, 2));
      for (let j = 0; j < 16; j++) {
        const q = <i32>load<u8>(blk + 4 + j);
        store<f32>(o + (<usize>j << 2), <f32>(q & 15) * d + m);
        store<f32>(o + (<usize>(j + 16) << 2), <f32>(q >> 4) * d + m);
      }
    } else if (type == 2) {
      const blk = w + (<usize>(row * nb + b)) * 18;
      const d = f16_to_f32(load<u16>(blk));
      for (let j = 0; j < 16; j++) {
        const q = <i32>load<u8>(blk + 2 + j);
        store<f32>(o + (<usize>j << 2), <f32>((q & 15) - 8) * d);
        store<f32>(o + (<usize>(j + 16) << 2), <f32>((q >> 4) - 8) * d);
      }
    } else {
      unreachable();
    }
  }
}

/** x = f16(x) in place, f32 (n): the query before attention over the f16 K cache. */
export function round_f16_row(x: usize, n: i32): void {
  for (let i = 0; i < n; i++) store<f32>(x + (<usize>i << 2), round_f16(load<f32>(x + (<usize>i << 2))));
}
