// IEEE half ↔ single, bit-exact with ggml (F16C on x86: round to nearest even).

/** f16 bits → f32. Normals and subnormals exact (scale trick); inf/nan not produced by GGUF scales. */
// @ts-ignore: decorator
@inline export function f16_to_f32(h: u32): f32 {
  const bits = ((h & 0x8000) << 16) | ((h & 0x7fff) << 13);
  return reinterpret<f32>(bits) * reinterpret<f32>(0x77800000); // × 2^112
}

/** f32 → f16 bits, round to nearest even, overflow → inf, nan → nan (Maratyszcza's FP16 method). */
// @ts-ignore: decorator
@inline export function f32_to_f16(f: f32): u32 {
  let base: f32 = (Mathf.abs(f) * reinterpret<f32>(0x77800000)) * reinterpret<f32>(0x08800000); // × 2^112 × 2^-110
  const w = reinterpret<u32>(f);
  const shl1_w = w + w;
  const sign = w & 0x80000000;
  let bias = shl1_w & 0xff000000;
  if (bias < 0x71000000) bias = 0x71000000;
  base = reinterpret<f32>((bias >> 1) + 0x07800000) + base;
  const bits = reinterpret<u32>(base);
  const nonsign = ((bits >> 13) & 0x00007c00) + (bits & 0x00000fff);
  return (sign >> 16) | (shl1_w > 0xff000000 ? 0x7e00 : nonsign);
}

/** Round an f32 to the nearest f16 value, as f32. */
// @ts-ignore: decorator
@inline export function round_f16(f: f32): f32 {
  return f16_to_f32(f32_to_f16(f));
}

// f16 → f32 by table (256 KiB, static data, filled at instantiation): one load instead of seven
// bit operations, for the per-block scales in the matvec inner loops.
const F16_TABLE: usize = memory.data(65536 * 4, 16);
for (let h: u32 = 0; h < 65536; h++) store<f32>(F16_TABLE + (<usize>h << 2), f16_to_f32(h));

// @ts-ignore: decorator
@inline export function f16_lut(h: u32): f32 {
  return load<f32>(F16_TABLE + (<usize>h << 2));
}
