/**
 * The in-Worker runtime for small models, provided by `backends/wasm.ts` (the WASM runtime's
 * file). While this is null, a model with no live pod answers 503.
 */
import type { ModelSpec } from "../models";
import type { InferenceBackend } from "./types";
import { createWasmBackend, wasmContext } from "./wasm";

export type LocalRuntimeFactory = (env: Env, spec: ModelSpec) => InferenceBackend | null;

export const localRuntime: LocalRuntimeFactory | null = createWasmBackend;

/**
 * The runtime's context for a model (prompt + completion it can hold), or null when it does not
 * serve it. `windowed`: it takes longer prompts by StreamingLLM windowing (opt-in).
 */
export const localRuntimeContext: ((env: Env, modelId: string) => { capacity: number; windowed: boolean } | null) | null = wasmContext;
