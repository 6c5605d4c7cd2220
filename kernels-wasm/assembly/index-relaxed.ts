// Relaxed-SIMD build: the 4-bit matvecs the runtime calls use relaxed_dot (checked at start-up).
export * from "./common";
export { matvec_q4_1_relaxed as matvec_q4_1_fast, matvec_q4_0_relaxed as matvec_q4_0_fast } from "./matvec-relaxed";
export { peak_dot_relaxed } from "./peak-relaxed";
export { matmat_q4_1_relaxed as matmat_q4_1_fast, matmat_q4_0_relaxed as matmat_q4_0_fast } from "./matmat-relaxed";
