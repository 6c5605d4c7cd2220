/** Bundles a check under test/workerd/ with esbuild and runs it once inside workerd (Miniflare),
 * with the relaxed-SIMD kernels bound as a CompiledWasm module; returns the JSON it answers.
 * (Node 20 computes relaxed_dot wrongly, so relaxed kernels are checked here.) */
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { wasmPath } from "./node-runtime";

export async function runInWorkerd<T>(check: string): Promise<T> {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL(`./workerd/${check}`, import.meta.url))],
    bundle: true, format: "esm", platform: "neutral", write: false, external: ["*.wasm"], logLevel: "error",
  });
  const mf = new Miniflare({
    modules: [
      { type: "ESModule", path: "worker.js", contents: bundle.outputFiles[0].text },
      { type: "CompiledWasm", path: "kernels-relaxed.wasm", contents: readFileSync(wasmPath("relaxed")) },
    ],
    compatibilityDate: "2026-04-20",
  });
  try {
    const res = await mf.dispatchFetch("http://check/");
    return (await res.json()) as T;
  } finally {
    await mf.dispose();
  }
}
