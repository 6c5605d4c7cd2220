/**
 * The in-Worker runtime for small models, provided by `backends/wasm.ts` (the WASM runtime's
 * file). While this is null, a model with no live pod answers 503.
 */
import type { ModelSpec } from "../models";
import type { InferenceBackend } from "./types";
import { createWasmBackend } from "./wasm";

export type LocalRuntimeFactory = (env: Env, spec: ModelSpec) => InferenceBackend | null;

export const localRuntime: LocalRuntimeFactory | null = createWasmBackend;
