// SIMD128 build: the 4-bit matvecs the runtime calls are the SIMD128 ones.
export * from "./common";
export { matvec_q4_1 as matvec_q4_1_fast, matvec_q4_0 as matvec_q4_0_fast } from "./matvec-simd";
export { matmat_q4_1 as matmat_q4_1_fast, matmat_q4_0 as matmat_q4_0_fast } from "./matmat";
