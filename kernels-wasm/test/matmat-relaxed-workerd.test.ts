/** Runs test/workerd/matmat-relaxed-check.ts in workerd (Miniflare): relaxed matmat = relaxed matvec per token, bit for bit. */
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { wasmPath } from "./node-runtime";

it("relaxed matmat equals the relaxed matvec token by token inside workerd", async () => {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("./workerd/matmat-relaxed-check.ts", import.meta.url))],
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
    const out = (await res.json()) as { cases: { kernel: string; nTok: number; rows: number; cols: number; mismatches: number }[] };
    expect(out.cases.length).toBe(10);
    for (const c of out.cases) expect(c.mismatches, `${c.kernel} ${c.nTok} tokens ${c.rows}x${c.cols}`).toBe(0);
  } finally {
    await mf.dispose();
  }
}, 120_000);
