/** The real SmolLM2 GGUF (scripts/fetch-models.sh puts it there; `make test` runs that first). */
import { openSync, readSync, closeSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseGGUFHeader, GGUFIncompleteError, type GGUFHeader } from "../src/gguf/reader";

export const MODEL_PATH = fileURLToPath(new URL("../../models/smollm2-135m-instruct-q4_1.gguf", import.meta.url));

export function requireModel(): string {
  if (!existsSync(MODEL_PATH)) throw new Error(`${MODEL_PATH} is missing: run scripts/fetch-models.sh (make test does)`);
  return MODEL_PATH;
}

export function readHeader(path = requireModel()): GGUFHeader {
  const fd = openSync(path, "r");
  try {
    for (let size = 1 << 20; ; size *= 2) {
      const buf = new Uint8Array(size);
      const n = readSync(fd, buf, 0, size, 0);
      try {
        return parseGGUFHeader(buf.subarray(0, n));
      } catch (e) {
        if (!(e instanceof GGUFIncompleteError) || n < size) throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
}
