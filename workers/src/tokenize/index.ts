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

const chatStops = new WeakMap<Tokenizer, number[]>();

/**
 * Token ids a chat answer stops at: the tokenizer's EOS ids and the special token that opens a
 * turn in its chat template (SmolLM2: `<|im_start|>`, id 1). A model that goes on to write the
 * next turn ends its answer there (as llama-server does), instead of the client getting a turn
 * marker and an invented user message. The marker is found from the template itself: the longest
 * start of the generation prompt ("<|im_start|>assistant\n") that is one token only when special
 * tokens are parsed.
 */
export function chatStopTokenIds(tokenizer: Tokenizer): number[] {
  let ids = chatStops.get(tokenizer);
  if (ids) return ids;
  ids = [...tokenizer.eosTokenIds];
  try {
    const turn = [{ role: "user", content: "x" }];
    const withPrompt = tokenizer.applyChatTemplate(turn, { addGenerationPrompt: true });
    const without = tokenizer.applyChatTemplate(turn, { addGenerationPrompt: false });
    const gen = withPrompt.startsWith(without) ? withPrompt.slice(without.length) : "";
    let marker: number | null = null;
    for (let k = 1; k <= gen.length; k++) {
      const piece = gen.slice(0, k);
      const special = tokenizer.encode(piece, { parseSpecial: true });
      if (special.length === 1 && tokenizer.encode(piece, { parseSpecial: false }).length > 1) marker = special[0];
    }
    if (marker !== null && !ids.includes(marker)) ids.push(marker);
  } catch {
    // no chat template: the EOS ids alone
  }
  chatStops.set(tokenizer, ids);
  return ids;
}
