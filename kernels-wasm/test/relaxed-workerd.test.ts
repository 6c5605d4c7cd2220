/** Runs test/workerd/relaxed-check.ts in workerd (Miniflare) and checks what it reports. */
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { wasmPath } from "./node-runtime";

it("relaxed-SIMD kernels equal the scalar references inside workerd", async () => {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("./workerd/relaxed-check.ts", import.meta.url))],
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
    const out = (await res.json()) as { selfCheck: boolean; cases: { kernel: string; rows: number; cols: number; maxRelErr: number }[] };
    expect(out.selfCheck).toBe(true);
    expect(out.cases.length).toBe(15);
    // q4_1 and q8_0 must equal the references bit for bit (Infinity otherwise), q4_0 within rounding
    for (const c of out.cases) expect(c.maxRelErr, `${c.kernel} ${c.rows}x${c.cols}`).toBeLessThan(1e-4);
  } finally {
    await mf.dispose();
  }
}, 120_000);
