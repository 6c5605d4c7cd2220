/** The ggml tensor types this runtime reads: id (as stored in GGUF) → block layout. */
export type GGMLTypeName = "F32" | "F16" | "Q4_0" | "Q4_1" | "Q8_0";

export interface GGMLType {
  name: GGMLTypeName;
  /** Elements per block. */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

export const GGML_TYPES: Record<number, GGMLType> = {
  0: { name: "F32", blockSize: 1, blockBytes: 4 },
  1: { name: "F16", blockSize: 1, blockBytes: 2 },
  2: { name: "Q4_0", blockSize: 32, blockBytes: 18 }, // f16 d, 16 B nibbles
  3: { name: "Q4_1", blockSize: 32, blockBytes: 20 }, // f16 d, f16 m, 16 B nibbles
  8: { name: "Q8_0", blockSize: 32, blockBytes: 34 }, // f16 d, 32 x i8
};
