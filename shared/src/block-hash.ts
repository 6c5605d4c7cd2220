/**
 * Block hashing v1 (shared/spec/block-hash.md): the name of a prompt prefix that the edge
 * and the pods agree on. Web Crypto only, so it runs in Workers and in Node alike.
 */

/** Bytes of one hash. */
export const BLOCK_HASH_BYTES = 16;
/** Default KV page / hashing block size in tokens. */
export const DEFAULT_BLOCK_SIZE = 16;

const ROOT = new Uint8Array(BLOCK_HASH_BYTES);
const encoder = new TextEncoder();

function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/**
 * Hashes of the full blocks of `tokens`, in order (hash i names tokens [0, (i+1)·B)).
 * `maxBlocks` stops early, for callers that only need a prefix.
 */
export async function blockHashes(
  model: string,
  tokens: ArrayLike<number>,
  blockSize: number = DEFAULT_BLOCK_SIZE,
  maxBlocks = Number.POSITIVE_INFINITY,
): Promise<string[]> {
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
  }
  const modelBytes = encoder.encode(model);
  const n = Math.min(Math.floor(tokens.length / blockSize), maxBlocks);
  // One buffer reused for every block: parent | len | model | B | tokens.
  const headerLen = BLOCK_HASH_BYTES + 4 + modelBytes.length + 4;
  const buf = new Uint8Array(headerLen + 4 * blockSize);
  const view = new DataView(buf.buffer);
  view.setUint32(BLOCK_HASH_BYTES, modelBytes.length, true);
  buf.set(modelBytes, BLOCK_HASH_BYTES + 4);
  view.setUint32(BLOCK_HASH_BYTES + 4 + modelBytes.length, blockSize, true);

  const out: string[] = [];
  let parent: Uint8Array = ROOT;
  for (let i = 0; i < n; i++) {
    buf.set(parent, 0);
    for (let j = 0; j < blockSize; j++) {
      const t = tokens[i * blockSize + j];
      if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) {
        throw new RangeError(`token ${i * blockSize + j} is not a u32: ${t}`);
      }
      view.setUint32(headerLen + 4 * j, t, true);
    }
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
    parent = digest.subarray(0, BLOCK_HASH_BYTES);
    out.push(toHex(parent));
  }
  return out;
}
