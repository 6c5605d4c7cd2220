/** Node-side helpers for tests and benchmarks: the built kernels and a file as a ModelSource. */
import { readFileSync, createReadStream, existsSync } from "node:fs";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/runtime/kernels";
import type { ModelSource } from "../src/runtime/loader";

export function wasmPath(variant: KernelVariant): string {
  const p = fileURLToPath(new URL(`../build/kernels-${variant === "simd128" ? "simd" : "relaxed"}.wasm`, import.meta.url));
  if (!existsSync(p)) throw new Error(`${p} is missing: run npm run build -w kernels-wasm`);
  return p;
}

export async function nodeKernels(variant: KernelVariant = "simd128"): Promise<Kernels> {
  return instantiateKernels(new WebAssembly.Module(readFileSync(wasmPath(variant))), variant);
}

export function fileSource(path: string): ModelSource {
  return {
    async read(offset, length) {
      const end = length === undefined ? undefined : offset + length - 1;
      return Readable.toWeb(createReadStream(path, { start: offset, end, highWaterMark: 1 << 20 })) as unknown as ReadableStream<Uint8Array>;
    },
  };
}
