/**
 * GGUF header reader: magic, metadata key/values and tensor infos (name, type, shape, offset).
 * Tensor bytes are not read here; the loader streams them separately (`dataOffset` onward).
 * Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (version 2 and 3).
 */
import { GGML_TYPES, type GGMLTypeName } from "./types";

export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

export interface GGUFTensorInfo {
  name: string;
  /** ggml dims, fastest-varying first: a matrix (rows=out, cols=in) is `[in, out]`. */
  shape: number[];
  type: GGMLTypeName;
  /** Byte offset from the start of the tensor-data section. */
  offset: number;
  byteLength: number;
}

export interface GGUFHeader {
  version: number;
  metadata: Record<string, GGUFValue>;
  tensors: GGUFTensorInfo[];
  /** Absolute file offset of the tensor-data section (aligned). */
  dataOffset: number;
}

/** Thrown when the bytes end before the header does: the caller reads more and retries. */
export class GGUFIncompleteError extends Error {
  constructor(public readonly needAtLeast: number) {
    super(`GGUF header is truncated: need at least ${needAtLeast} bytes`);
  }
}

export class GGUFFormatError extends Error {}

const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

class Cursor {
  pos = 0;
  private view: DataView;
  constructor(private bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.bytes.byteLength) throw new GGUFIncompleteError(this.pos + n);
  }
  u8(): number { this.need(1); return this.view.getUint8(this.pos++); }
  i8(): number { this.need(1); return this.view.getInt8(this.pos++); }
  u16(): number { this.need(2); const v = this.view.getUint16(this.pos, true); this.pos += 2; return v; }
  i16(): number { this.need(2); const v = this.view.getInt16(this.pos, true); this.pos += 2; return v; }
  u32(): number { this.need(4); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  i32(): number { this.need(4); const v = this.view.getInt32(this.pos, true); this.pos += 4; return v; }
  f32(): number { this.need(4); const v = this.view.getFloat32(this.pos, true); this.pos += 4; return v; }
  f64(): number { this.need(8); const v = this.view.getFloat64(this.pos, true); this.pos += 8; return v; }
  u64(): bigint { this.need(8); const v = this.view.getBigUint64(this.pos, true); this.pos += 8; return v; }
  i64(): bigint { this.need(8); const v = this.view.getBigInt64(this.pos, true); this.pos += 8; return v; }
  /** A u64 that must fit a JS number (counts, offsets). */
  size(what: string): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GGUFFormatError(`${what} ${v} is too large`);
    return Number(v);
  }
  str(): string {
    const n = this.size("string length");
    this.need(n);
    const s = utf8.decode(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}

// GGUF metadata value types.
const enum VT { U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 }
/** The fewest bytes one value of each type takes (a string: its u64 length; an array: type + count). */
const MIN_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

function readValue(c: Cursor, type: number): GGUFValue {
  switch (type) {
    case VT.U8: return c.u8();
    case VT.I8: return c.i8();
    case VT.U16: return c.u16();
    case VT.I16: return c.i16();
    case VT.U32: return c.u32();
    case VT.I32: return c.i32();
    case VT.F32: return c.f32();
    case VT.BOOL: return c.u8() !== 0;
    case VT.STRING: return c.str();
    case VT.U64: return c.u64();
    case VT.I64: return c.i64();
    case VT.F64: return c.f64();
    case VT.ARRAY: {
      const itemType = c.u32();
      const n = c.size("array length");
      // The count comes from the file: the bytes must be there before it sizes an allocation.
      c.need(n * (MIN_BYTES[itemType] ?? 1));
      const out: GGUFValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(c, itemType);
      return out;
    }
    default:
      throw new GGUFFormatError(`unknown GGUF metadata value type ${type}`);
  }
}

/**
 * Parses the header from the file's first bytes. Throws GGUFIncompleteError when `bytes` is too
 * short (read more, retry) and GGUFFormatError when the bytes are not a GGUF file we understand.
 */
export function parseGGUFHeader(bytes: Uint8Array): GGUFHeader {
  const c = new Cursor(bytes);
  const magic = c.u32();
  if (magic !== 0x46554747) throw new GGUFFormatError(`not a GGUF file (magic 0x${magic.toString(16)}, expected 0x46554747 "GGUF")`);
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new GGUFFormatError(`GGUF version ${version} is not supported (expected 2 or 3)`);
  const nTensors = c.size("tensor count");
  const nKV = c.size("metadata count");
  const metadata: Record<string, GGUFValue> = {};
  for (let i = 0; i < nKV; i++) {
    const key = c.str();
    metadata[key] = readValue(c, c.u32());
  }
  const tensors: GGUFTensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = c.str();
    const nDims = c.u32();
    if (nDims < 1 || nDims > 4) throw new GGUFFormatError(`tensor ${name}: ${nDims} dims (expected 1..4)`);
    const shape: number[] = [];
    for (let d = 0; d < nDims; d++) shape.push(c.size(`tensor ${name} dim`));
    const typeId = c.u32();
    const t = GGML_TYPES[typeId];
    if (!t) throw new GGUFFormatError(`tensor ${name}: ggml type ${typeId} is not supported`);
    const offset = c.size(`tensor ${name} offset`);
    const n = shape.reduce((a, b) => a * b, 1);
    if (shape[0] % t.blockSize !== 0) throw new GGUFFormatError(`tensor ${name}: row of ${shape[0]} is not a multiple of ${t.name} block ${t.blockSize}`);
    tensors.push({ name, shape, type: t.name, offset, byteLength: (n / t.blockSize) * t.blockBytes });
  }
  const alignment = Number(metadata["general.alignment"] ?? 32);
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  return { version, metadata, tensors, dataOffset };
}
