// Runs in Node before the workerd tests: exports the real model's tokenizer from its GGUF (with
// kernels-wasm's exporter) to .cache/tokenizers/, where the tests import it from.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

export const ROOT = resolve(__dirname, "../..");
export const TOKENIZER_JSON = resolve(ROOT, ".cache/tokenizers/smollm2-135m-instruct.json");
const GGUF = resolve(ROOT, "models/smollm2-135m-instruct-q4_1.gguf");

export default function setup(): void {
  if (existsSync(TOKENIZER_JSON)) return;
  if (!existsSync(GGUF)) {
    throw new Error(`${GGUF} is missing: run scripts/fetch-models.sh (make test does)`);
  }
  execFileSync(process.execPath, [resolve(ROOT, "kernels-wasm/scripts/export-tokenizer.mjs"), GGUF, TOKENIZER_JSON], {
    stdio: "inherit",
  });
}
