/**
 * Loads a GGUF into a Model: the header from the first bytes, then the tensor-data section
 * streamed straight into WASM memory. With a BYOB reader the chunks land in one reused scratch
 * buffer (a BYOB read cannot target WASM memory itself: it is not detachable), so the only full
 * copy of the weights is the one in WASM memory.
 */
import { GGUFIncompleteError, parseGGUFHeader, type GGUFHeader } from "../gguf/reader";
import type { RuntimeOptions } from "./config";
import type { Kernels } from "./kernels";
import { Model } from "./model";

/** Byte ranges of a GGUF file: an R2 object, a file, a fetch. */
export interface ModelSource {
  /** Bytes [offset, offset + length) of the file, or from offset to the end. */
  read(offset: number, length?: number): Promise<ReadableStream<Uint8Array>>;
}

const SCRATCH_BYTES = 1 << 20;

export async function readHeader(src: ModelSource): Promise<GGUFHeader> {
  for (let size = 2 << 20; size <= 256 << 20; size *= 2) {
    const bytes = await readAll(await src.read(0, size), size);
    try {
      return parseGGUFHeader(bytes);
    } catch (e) {
      if (!(e instanceof GGUFIncompleteError) || bytes.length < size) throw e;
    }
  }
  throw new Error("GGUF header is larger than 256 MiB");
}

export async function loadModel(src: ModelSource, kernels: Kernels, options: Partial<RuntimeOptions> = {}): Promise<Model> {
  const header = await readHeader(src);
  const model = new Model(kernels, header, options);
  const dst = model.weightBytes();
  const n = await streamInto(await src.read(header.dataOffset, dst.length), dst);
  if (n !== dst.length) throw new Error(`GGUF tensor data is truncated: got ${n} of ${dst.length} bytes`);
  return model;
}

/** Copies a stream into dst; returns the byte count. Throws if the stream is longer than dst. */
export async function streamInto(stream: ReadableStream<Uint8Array>, dst: Uint8Array): Promise<number> {
  let off = 0;
  const put = (chunk: Uint8Array) => {
    if (off + chunk.length > dst.length) throw new Error(`stream is longer than the ${dst.length} bytes expected`);
    dst.set(chunk, off);
    off += chunk.length;
  };
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = stream.getReader({ mode: "byob" });
  } catch {
    byob = undefined; // not a byte stream: default reader
  }
  if (byob) {
    let scratch = new ArrayBuffer(SCRATCH_BYTES);
    for (;;) {
      const { done, value } = await byob.read(new Uint8Array(scratch, 0, Math.min(SCRATCH_BYTES, Math.max(1, dst.length - off))));
      if (done || !value) break;
      put(value);
      scratch = value.buffer as ArrayBuffer; // the read transferred our buffer back: reuse it
      if (off === dst.length) { await byob.cancel().catch(() => {}); break; }
    }
    return off;
  }
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    put(value);
  }
  return off;
}

async function readAll(stream: ReadableStream<Uint8Array>, cap: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
    if (n >= cap) { await reader.cancel().catch(() => {}); break; }
  }
  const out = new Uint8Array(Math.min(n, cap));
  let o = 0;
  for (const p of parts) { const take = Math.min(p.length, out.length - o); out.set(p.subarray(0, take), o); o += take; }
  return out;
}
