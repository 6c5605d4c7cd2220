#!/usr/bin/env node
// GGUF → tokenizers/<model-id>.json (the form Tokenizer.fromJSON reads; the edge loads it from R2).
// Usage: node scripts/export-tokenizer.mjs <model.gguf> <out.json>
// Reads only the header (the first few MB), never the weights. The runtime is TypeScript and
// Node 20 cannot run it directly: esbuild (wrangler's own dependency) bundles it on the fly.
import { build } from "esbuild";
import { open, writeFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [, , gguf, out] = process.argv;
if (!gguf || !out) {
  console.error("usage: export-tokenizer.mjs <model.gguf> <out.json>");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
// The runtime is TypeScript; bundle the two entry points we need into one ESM string.
const res = await build({
  stdin: {
    contents: `export { parseGGUFHeader, GGUFIncompleteError } from "./src/gguf/reader.ts";
               export { tokenizerDataFromGGUF } from "./src/tokenizer/data.ts";`,
    resolveDir: join(here, ".."),
    loader: "ts",
  },
  bundle: true, format: "esm", platform: "node", write: false,
});
const mod = await import("data:text/javascript;base64," + Buffer.from(res.outputFiles[0].text).toString("base64"));

const fh = await open(gguf, "r");
let size = 1 << 20;
let header;
for (;;) {
  const buf = Buffer.alloc(size);
  const { bytesRead } = await fh.read(buf, 0, size, 0);
  try {
    header = mod.parseGGUFHeader(new Uint8Array(buf.buffer, buf.byteOffset, bytesRead));
    break;
  } catch (e) {
    if (!(e instanceof mod.GGUFIncompleteError) || bytesRead < size) throw e;
    size *= 2;
  }
}
await fh.close();
const data = mod.tokenizerDataFromGGUF(header.metadata);
await mkdir(dirname(out), { recursive: true });
await writeFile(out, JSON.stringify(data));
console.log(`tokenizer: ${out} (${data.model}/${data.pre}, ${data.tokens.length} tokens, eos ${data.eosTokenIds.join(",")})`);
