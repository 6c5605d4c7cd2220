/**
 * The in-Worker backend: serves small GGUF models with the kernels-wasm runtime (no GPU, no
 * pod). Weights stream from the MODELS R2 bucket into WASM memory on the first request. One
 * request runs at a time per isolate (one KV cache); others wait in FIFO order. The KV of the
 * previous request is reused for a shared prompt prefix (reported as cachedTokens).
 */
import { Sampler } from "@edgeserve/kernels-wasm/runtime";
import type { ModelSpec } from "../models";
import type { BackendEvent, GenerateParams, InferenceBackend } from "./types";
import { ModelNotInstalledError } from "./wasm/r2-source";
import { getRuntime, type WasmModelConfig } from "./wasm/runtime";

/** Models the WASM runtime serves: id → GGUF in R2 and KV budget. */
export const WASM_MODELS: Record<string, WasmModelConfig> = {
  "smollm2-135m-instruct": {
    key: "models/smollm2-135m-instruct-q4_1.gguf",
    // 512 KV slots × 30 layers × 2 × 192 × f16 = 11.8 MB: with 96.6 MB of weights this keeps
    // the isolate under the 128 MB limit (measured: bench/results/wasm/).
    runtime: { sinkTokens: 4, windowTokens: 508, prefillBatch: 16 },
  },
};

export class WasmBackend implements InferenceBackend {
  readonly id = "wasm";
  constructor(private readonly bucket: R2Bucket, private readonly cfg: WasmModelConfig) {}

  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    const bad = checkParams(p);
    if (bad) { yield { type: "error", code: "invalid_request", message: bad, retryable: false }; return; }
    let rt;
    try {
      rt = await getRuntime(this.bucket, this.cfg);
    } catch (e) {
      const code = e instanceof ModelNotInstalledError ? "model_not_installed" : "wasm_load_failed";
      yield { type: "error", code, message: `WASM runtime could not load ${p.model}: ${(e as Error).message}`, retryable: true };
      return;
    }
    const { model } = rt;
    if (p.promptTokenIds.some((t) => t >= model.cfg.vocabSize)) {
      yield { type: "error", code: "invalid_request", message: `prompt token ids must be < ${model.cfg.vocabSize}`, retryable: false };
      return;
    }
    let release: () => void;
    try {
      release = await rt.lock.acquire(p.signal);
    } catch {
      yield { type: "final", finishReason: "cancelled", usage: { promptTokens: p.promptTokenIds.length, completionTokens: 0, cachedTokens: 0 } };
      return;
    }
    try {
      const sampler = new Sampler({ temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed }, model.cfg.vocabSize);
      const prompt = p.promptTokenIds;
      // Reuse the cached prefix while the cache never wrapped (positions == slots).
      let cached = 0;
      if (rt.cached.length <= model.kv.capacity) {
        while (cached < prompt.length - 1 && cached < rt.cached.length && rt.cached[cached] === prompt[cached]) cached++;
      }
      rt.cached = prompt.slice(0, cached);
      let logits!: Float32Array;
      let pos = cached;
      // batched prefill (Model.prefill: same logits as forward() token by token), one batch
      // between event-loop yields
      while (pos < prompt.length) {
        const chunk = prompt.slice(pos, Math.min(prompt.length, pos + model.opts.prefillBatch));
        logits = model.prefill(chunk, pos);
        rt.cached.push(...chunk);
        pos += chunk.length;
        if (pos < prompt.length) {
          await yieldToEventLoop();
          if (p.signal.aborted) return yield cancelled(p, 0, cached);
        }
      }
      const stop = new Set(p.stopTokenIds);
      let produced = 0;
      for (;;) {
        // greedy: the argmax in WASM (a JS loop over the vocabulary costs ~0.3 ms a token in workerd)
        const t = p.temperature === 0 ? model.greedy() : sampler.sample(logits);
        produced++;
        yield { type: "tokens", tokenIds: [t] };
        if (stop.has(t)) return yield final(p, "stop", produced, cached);
        if (produced >= p.maxTokens) return yield final(p, "length", produced, cached);
        await yieldToEventLoop();
        if (p.signal.aborted) return yield cancelled(p, produced, cached);
        logits = model.forward(t, pos);
        rt.cached.push(t);
        pos++;
      }
    } finally {
      release();
    }
  }
}

/** The router's factory (backends/local-runtime.ts): a backend for models the runtime knows. */
export function createWasmBackend(env: Env, spec: ModelSpec): InferenceBackend | null {
  const cfg = WASM_MODELS[spec.id];
  return cfg ? new WasmBackend(env.MODELS, cfg) : null;
}

function checkParams(p: GenerateParams): string | null {
  if (!Array.isArray(p.promptTokenIds) || p.promptTokenIds.length === 0) return "promptTokenIds must be a non-empty array";
  if (!p.promptTokenIds.every((t) => Number.isInteger(t) && t >= 0)) return "promptTokenIds must be integers ≥ 0";
  if (!Number.isInteger(p.maxTokens) || p.maxTokens < 1) return `maxTokens must be an integer ≥ 1, got ${p.maxTokens}`;
  if (!(p.temperature >= 0)) return `temperature must be ≥ 0, got ${p.temperature}`;
  if (!(p.topP > 0 && p.topP <= 1)) return `topP must be in (0, 1], got ${p.topP}`;
  if (!Number.isInteger(p.topK) || p.topK < 0) return `topK must be an integer ≥ 0, got ${p.topK}`;
  return null;
}

function final(p: GenerateParams, finishReason: "stop" | "length", produced: number, cached: number): BackendEvent {
  return { type: "final", finishReason, usage: { promptTokens: p.promptTokenIds.length, completionTokens: produced, cachedTokens: cached } };
}

function cancelled(p: GenerateParams, produced: number, cached: number): BackendEvent {
  return { type: "final", finishReason: "cancelled", usage: { promptTokens: p.promptTokenIds.length, completionTokens: produced, cachedTokens: cached } };
}

/** Lets the response stream flush and the abort signal fire between tokens. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}
