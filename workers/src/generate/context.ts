/**
 * Which context length applies to a request, per backend and on this deployment. A GPU pod
 * holds the catalog's `contextLength`; the in-Worker runtime only its KV capacity (512 tokens
 * for SmolLM2: sink + window, backends/wasm.ts) unless StreamingLLM windowing is opted in
 * (WASM_STREAMING_WINDOW). So:
 * - no pod serves the model on this deployment (none registered, live or stale: e.g. `make dev`
 *   before a pod joins): the runtime's capacity IS the model's context, what /v1/models
 *   advertises and what a 400 context_length_exceeded names;
 * - pods serve it: the catalog's context; a request that only a pod can hold, while no pod is
 *   live, is a 503 with Retry-After (temporary), never windowed by the runtime.
 */
import { localRuntimeContext } from "../backends/local-runtime";
import type { ModelSpec } from "../models";

export interface ModelContexts {
  /** The catalog's context, when the model may be served by pods. */
  pod: number | null;
  /** What the in-Worker runtime holds without windowing, when it serves the model. */
  wasmCapacity: number | null;
  /** The most the in-Worker runtime takes: its capacity, or the catalog's context when windowed. */
  wasm: number | null;
}

export function modelContexts(env: Env, spec: ModelSpec): ModelContexts {
  const local = spec.backends.includes("wasm") && localRuntimeContext ? localRuntimeContext(env, spec.id) : null;
  return {
    pod: spec.backends.includes("pod") ? spec.contextLength : null,
    wasmCapacity: local?.capacity ?? null,
    wasm: local ? (local.windowed ? spec.contextLength : Math.min(local.capacity, spec.contextLength)) : null,
  };
}

/** The model's context on this deployment: the pods' when it has pods for the model, else the runtime's. */
export function deploymentContext(ctx: ModelContexts, podsKnown: boolean, spec: ModelSpec): number {
  if (podsKnown && ctx.pod !== null) return ctx.pod;
  return ctx.wasm ?? ctx.pod ?? spec.contextLength;
}
