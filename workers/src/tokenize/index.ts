/**
 * Tokenizers at the edge, one per model per isolate. The JSON (kernels-wasm's TokenizerData) is
 * read from R2 once, behind one shared promise, so concurrent first requests wait for the same
 * load; a failed load is forgotten so that the next request tries again.
 */
import { Tokenizer } from "@edgeserve/kernels-wasm/tokenizer";
import { ApiError } from "../errors";
import type { ModelSpec } from "../models";

export type { StreamDecoder } from "@edgeserve/kernels-wasm/tokenizer";
export type { Tokenizer };

const loading = new Map<string, Promise<Tokenizer>>();

async function load(bucket: R2Bucket, spec: ModelSpec): Promise<Tokenizer> {
  const obj = await bucket.get(spec.tokenizerKey);
  if (!obj) {
    throw new ApiError(503, `The tokenizer for '${spec.id}' is not installed (R2 key ${spec.tokenizerKey}).`, {
      code: "tokenizer_unavailable",
    });
  }
  try {
    return Tokenizer.fromJSON(await obj.json());
  } catch (e) {
    throw new ApiError(503, `The tokenizer for '${spec.id}' is unreadable: ${(e as Error).message}`, {
      code: "tokenizer_unavailable",
      cause: e,
    });
  }
}

export function getTokenizer(bucket: R2Bucket, spec: ModelSpec): Promise<Tokenizer> {
  let p = loading.get(spec.id);
  if (!p) {
    p = load(bucket, spec);
    loading.set(spec.id, p);
    p.catch(() => loading.delete(spec.id));
  }
  return p;
}

/** Tests: forget loaded tokenizers. */
export function clearTokenizerCache(): void {
  loading.clear();
}
