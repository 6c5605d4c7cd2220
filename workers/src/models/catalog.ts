/**
 * The models this edge serves: id → tokenizer, context length and which backends may serve it.
 * A model not listed here is unknown (404), whatever the pods say they serve.
 */
export type BackendKind = "pod" | "wasm";

export interface ModelSpec {
  id: string;
  /** R2 key in the MODELS bucket of the tokenizer JSON (kernels-wasm's `Tokenizer.fromJSON`). */
  tokenizerKey: string;
  /** Prompt + completion tokens. */
  contextLength: number;
  /** Completion length when the request names none (chat); never above what the context leaves. */
  defaultMaxTokens: number;
  /** In order of preference: a live pod first, the in-Worker runtime as the fallback. */
  backends: BackendKind[];
  ownedBy: string;
  /** Unix seconds, for /v1/models. */
  created: number;
}

export const DEFAULT_MODEL = "smollm2-135m-instruct";

export const MODELS: readonly ModelSpec[] = [
  {
    id: DEFAULT_MODEL,
    tokenizerKey: `tokenizers/${DEFAULT_MODEL}.json`,
    contextLength: 8192,
    defaultMaxTokens: 512,
    backends: ["pod", "wasm"],
    ownedBy: "huggingfacetb",
    created: 1730419200,
  },
];
