/**
 * What the edge routes call to get tokens for a prompt, whatever produces them: a GPU pod over
 * the pod protocol (`pod.ts`) or the in-Worker WASM runtime (`wasm.ts`). Token ids in, token ids
 * out; text lives only in the routes (tokenizer + detokenizer).
 */

export interface GenerateParams {
  requestId: string;
  model: string;
  promptTokenIds: number[];
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  seed?: number;
  /** Generation stops after emitting one of these (the token itself is not shown to the user). */
  stopTokenIds: number[];
  /** Aborted when the client goes away: the backend must stop work and free its state. */
  signal: AbortSignal;
}

export type FinishReason = "stop" | "length" | "cancelled";

export interface BackendUsage {
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
}

export type BackendEvent =
  | { type: "tokens"; tokenIds: number[] }
  /** `cutBy`: a limit of the backend (not max_tokens) ended the answer, e.g. "wasm_time_limit"; logged. */
  | { type: "final"; finishReason: FinishReason; usage: BackendUsage; cutBy?: string }
  /** `retryable`: nothing was produced yet and another backend may take the request. */
  | { type: "error"; code: string; message: string; retryable: boolean };

export interface InferenceBackend {
  /** Identifies the backend in logs and debug headers (pod id, or "wasm"). */
  readonly id: string;
  generate(params: GenerateParams): AsyncIterable<BackendEvent>;
}
