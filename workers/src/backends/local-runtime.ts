/**
 * The in-Worker runtime for small models, provided by `backends/wasm.ts` (the WASM runtime's
 * file). It has not landed yet: while this is null, a model with no live pod answers 503.
 */
import type { ModelSpec } from "../models";
import type { InferenceBackend } from "./types";

export type LocalRuntimeFactory = (env: Env, spec: ModelSpec) => InferenceBackend | null;

export const localRuntime: LocalRuntimeFactory | null = null;
