// Kernels shared by both builds (index-simd.ts, index-relaxed.ts).
export { quantize_q8 } from "./quantize";
export { matvec_q4_1_ref, matvec_q4_0_ref, matvec_q8_0_ref, matvec_f32_ref, matvec_f16_ref } from "./matvec-ref";
export { matvec_q4_1, matvec_q4_0, matvec_q8_0, matvec_f32, matvec_f16 } from "./matvec-simd";
export { rmsnorm, rope, silu_mul, add_inplace, f32_to_f16_row, round_f16_row, get_row } from "./ops";
export { attention, attention_ref } from "./attention";
export { argmax_f32, argmax_f32_ref } from "./argmax";
export { matmat_q4_1, matmat_q4_0, matmat_q8_0 } from "./matmat";

/** First free byte after the module's static data: the runtime lays its buffers out from here. */
export function heap_base(): usize {
  return __heap_base;
}
export { peak_dot_i16, copy_bytes } from "./peak";
