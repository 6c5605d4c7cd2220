import { describe, expect, it } from "vitest";
import { GGUFIncompleteError, parseGGUFHeader } from "./reader";
import { modelConfigFromGGUF } from "../runtime/config";

/** A GGUF v3 header: the given metadata (key → [type, bytes of the value]) and no tensors. */
function gguf(kv: [string, number, Uint8Array][]): Uint8Array {
  const parts: number[] = [];
  const u32 = (v: number) => { for (let i = 0; i < 4; i++) parts.push((v >>> (8 * i)) & 255); };
  const u64 = (v: bigint) => { for (let i = 0n; i < 8n; i++) parts.push(Number((v >> (8n * i)) & 255n)); };
  const str = (s: string) => { const b = new TextEncoder().encode(s); u64(BigInt(b.length)); parts.push(...b); };
  u32(0x46554747); u32(3); u64(0n); u64(BigInt(kv.length));
  for (const [k, type, value] of kv) { str(k); u32(type); parts.push(...value); }
  return Uint8Array.from(parts);
}
const le = (n: bigint, bytes: number) => Uint8Array.from({ length: bytes }, (_, i) => Number((n >> BigInt(8 * i)) & 255n));
const u32v = (v: number) => le(BigInt(v), 4);

describe("parseGGUFHeader", () => {
  it("does not size an allocation by an array count the bytes cannot hold", () => {
    // an array of 2^40 u32 in a 60-byte file: "need more bytes", not a 4 TB Array
    const arr = Uint8Array.from([...u32v(4), ...le(1n << 40n, 8)]);
    const bytes = gguf([["x", 9, arr]]);
    let err: unknown;
    try { parseGGUFHeader(bytes); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(GGUFIncompleteError);
    expect((err as GGUFIncompleteError).needAtLeast).toBeGreaterThan(4 * 2 ** 40);
  });

  it("reads an array whose bytes are there", () => {
    const arr = Uint8Array.from([...u32v(4), ...le(3n, 8), ...u32v(1), ...u32v(2), ...u32v(3)]);
    expect(parseGGUFHeader(gguf([["x", 9, arr]])).metadata.x).toEqual([1, 2, 3]);
  });
});

describe("modelConfigFromGGUF", () => {
  const header = (dim: number, heads: number) => ({
    version: 3, tensors: [], dataOffset: 0,
    metadata: {
      "general.architecture": "llama", "llama.embedding_length": dim, "llama.attention.head_count": heads,
      "llama.block_count": 1, "llama.feed_forward_length": 64, "llama.context_length": 128, "llama.vocab_size": 32,
    },
  });
  it("refuses a head dim the attention kernel cannot hold (> 256)", () => {
    expect(modelConfigFromGGUF(header(512, 2)).headDim).toBe(256);
    expect(() => modelConfigFromGGUF(header(1024, 2))).toThrow(/head dim 512 is above 256/);
  });
});
