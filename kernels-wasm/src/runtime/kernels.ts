/**
 * The AssemblyScript kernel module (assembly/, built to build/kernels-{simd,relaxed}.wasm) as a
 * typed object. Pointers are byte offsets into the module's one memory.
 * workerd cannot compile WASM from bytes at run time: callers pass the bundled WebAssembly.Module.
 */
type Ptr = number;

export interface KernelExports {
  memory: WebAssembly.Memory;
  heap_base(): Ptr;
  quantize_q8(x: Ptr, n: number, aq: Ptr, a16: Ptr, a16p: Ptr, ad: Ptr, as: Ptr): void;
  /** The Q4 kernels the model calls: SIMD128 (takes a16p) or relaxed (takes aq). */
  matvec_q4_1_fast(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q4_0_fast(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q4_1(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q4_0(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q8_0(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, out: Ptr): void;
  matvec_f32(w: Ptr, rows: number, cols: number, x: Ptr, out: Ptr): void;
  matvec_f16(w: Ptr, rows: number, cols: number, x: Ptr, out: Ptr): void;
  matvec_q4_1_ref(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q4_0_ref(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr): void;
  matvec_q8_0_ref(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, out: Ptr): void;
  matvec_f32_ref(w: Ptr, rows: number, cols: number, x: Ptr, out: Ptr): void;
  matvec_f16_ref(w: Ptr, rows: number, cols: number, x: Ptr, out: Ptr): void;
  rmsnorm(x: Ptr, w: Ptr, out: Ptr, n: number, eps: number): void;
  rope(x: Ptr, nHeads: number, headDim: number, pos: number, base: number): void;
  silu_mul(gate: Ptr, up: Ptr, n: number): void;
  add_inplace(x: Ptr, y: Ptr, n: number): void;
  f32_to_f16_row(x: Ptr, out: Ptr, n: number): void;
  round_f16_row(x: Ptr, n: number): void;
  get_row(w: Ptr, type: number, row: number, cols: number, out: Ptr): void;
  attention(q: Ptr, kc: Ptr, vc: Ptr, n: number, nHeads: number, nKV: number, headDim: number, scale: number, scores: Ptr, out: Ptr): void;
  attention_ref(q: Ptr, kc: Ptr, vc: Ptr, n: number, nHeads: number, nKV: number, headDim: number, scale: number, scores: Ptr, out: Ptr): void;
  /** assembly/matmat.ts: the matvec above for nTok tokens (activations and outputs token-major). */
  matmat_q4_1_fast(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr, nTok: number): void;
  matmat_q4_0_fast(w: Ptr, rows: number, cols: number, aq: Ptr, ad: Ptr, as: Ptr, out: Ptr, nTok: number): void;
  matmat_q4_1(w: Ptr, rows: number, cols: number, a16p: Ptr, ad: Ptr, as: Ptr, out: Ptr, nTok: number): void;
  matmat_q4_0(w: Ptr, rows: number, cols: number, a16p: Ptr, ad: Ptr, as: Ptr, out: Ptr, nTok: number): void;
  matmat_q8_0(w: Ptr, rows: number, cols: number, a16: Ptr, ad: Ptr, out: Ptr, nTok: number): void;
  /** assembly/argmax.ts: index of the largest of n f32 (lowest on ties), as sampler.ts's argmax. */
  argmax_f32(x: Ptr, n: number): number;
  argmax_f32_ref(x: Ptr, n: number): number;
}

export type KernelVariant = "simd128" | "relaxed";

export interface Kernels {
  variant: KernelVariant;
  k: KernelExports;
}

export async function instantiateKernels(module: WebAssembly.Module, variant: KernelVariant): Promise<Kernels> {
  const inst = await WebAssembly.instantiate(module, {
    env: {
      abort(_msg: number, _file: number, line: number, col: number) {
        throw new Error(`kernel abort at ${line}:${col}`);
      },
    },
  });
  return { variant, k: inst.exports as unknown as KernelExports };
}
