/**
 * The in-Worker backend: serves small GGUF models with the kernels-wasm runtime (no GPU, no
 * pod). Weights stream from the MODELS R2 bucket into WASM memory on the first request. One
 * request runs at a time per isolate (one KV cache); others wait in FIFO order, within the
 * lock's bounds (wasm/mutex.ts: queue length, wait, hold time). The KV of the previous request
 * is reused for a shared prompt prefix (reported as cachedTokens).
 *
 * Its KV cache holds `sinkTokens + windowTokens` positions (512 for SmolLM2): that is the
 * runtime's context. A request whose prompt + max_tokens exceeds it is refused (`prompt_too_long`,
 * a 400 context_length_exceeded) unless WASM_STREAMING_WINDOW opts in to StreamingLLM windowing,
 * which keeps the first `sinkTokens` and the last `windowTokens` and silently forgets the middle.
 * The router (forward/router.ts) and buildJob (generate/job.ts) send such requests to a pod or
 * refuse them before any work; the check here is the backend's own.
 */
import { Sampler } from "@edgeserve/kernels-wasm/runtime";
import type { ModelSpec } from "../models";
import type { BackendEvent, GenerateParams, InferenceBackend } from "./types";
import { defaultLockLimits, type Lease, type LockLimits, QueueFullError, WaitTimeoutError } from "./wasm/mutex";
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

/** Positions the runtime's KV cache holds: its context (prompt + completion) without windowing. */
export function wasmCapacity(cfg: WasmModelConfig): number {
  return cfg.runtime.sinkTokens + cfg.runtime.windowTokens;
}

/**
 * The in-Worker runtime's context for `modelId` on this deployment, or null when it does not
 * serve the model. With WASM_STREAMING_WINDOW opted in, `windowed` is true and the runtime takes
 * prompts up to the catalog's context (StreamingLLM: the middle is forgotten).
 */
export function wasmContext(env: Env, modelId: string): { capacity: number; windowed: boolean } | null {
  const cfg = WASM_MODELS[modelId];
  return cfg ? { capacity: wasmCapacity(cfg), windowed: streamingWindowOptIn(env) } : null;
}

/** WASM_STREAMING_WINDOW = "1" or "true": serve prompts beyond the KV capacity by windowing. Off by default. */
export function streamingWindowOptIn(env: Env): boolean {
  const v = (env as unknown as Partial<Record<string, unknown>>).WASM_STREAMING_WINDOW;
  return v === "1" || v === "true";
}

/**
 * Prefill cost used for the up-front refusal: lower than any measured rate (bench/results/wasm:
 * 16-40 ms a token batched in workerd; 11.4 ms a token in audit A4's 7000-token run), so a prompt
 * refused by it could not have been read within WASM_MAX_HOLD_MS on any host seen so far.
 */
export const OPTIMISTIC_PREFILL_MS_PER_TOKEN = 10;

export interface WasmBackendOptions {
  limits?: LockLimits;
  /** StreamingLLM windowing beyond the KV capacity (WASM_STREAMING_WINDOW). */
  windowed?: boolean;
}

export class WasmBackend implements InferenceBackend {
  readonly id = "wasm";
  private readonly limits: LockLimits;
  private readonly windowed: boolean;
  constructor(
    private readonly bucket: R2Bucket,
    private readonly cfg: WasmModelConfig,
    opts: WasmBackendOptions = {},
  ) {
    this.limits = opts.limits ?? defaultLockLimits;
    this.windowed = opts.windowed ?? false;
  }

  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    const bad = checkParams(p);
    if (bad) { yield { type: "error", code: "invalid_request", message: bad, retryable: false }; return; }
    const tooLong = this.refuseUpFront(p);
    if (tooLong) return yield tooLong;
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
    let lease: Lease;
    try {
      lease = await rt.lock.acquire(p.signal, this.limits);
    } catch (e) {
      if (e instanceof QueueFullError || e instanceof WaitTimeoutError) {
        yield { type: "error", code: "overloaded", message: `in-Worker runtime: ${e.message}`, retryable: true };
        return;
      }
      yield cancelled(p, 0, 0);
      return;
    }
    // The lease ends by itself when p.signal aborts (the client left) or when it is overdue; this
    // code may never run again after such an await, so it checks before every touch of the model.
    let produced = 0;
    let cached = 0;
    const interrupted = (): BackendEvent | null => {
      if (lease.held && lease.overdue) lease.revoke("hold");
      // An answer cut by the hold bound ends like one cut by max_tokens: "length", with its text.
      if (lease.revokedFor === "hold" && produced > 0) return final(p, "length", produced, cached, "wasm_time_limit");
      if (lease.revokedFor) return revokedError(lease, produced);
      if (p.signal.aborted || !lease.held) return cancelled(p, produced, cached);
      lease.touch();
      return null;
    };
    try {
      const sampler = new Sampler({ temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed }, model.cfg.vocabSize);
      const prompt = p.promptTokenIds;
      // Reuse the cached prefix while the cache never wrapped (positions == slots).
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
          const end = interrupted();
          if (end) return yield end;
        }
      }
      const stop = new Set(p.stopTokenIds);
      for (;;) {
        // greedy: the argmax in WASM (a JS loop over the vocabulary costs ~0.3 ms a token in workerd)
        const t = p.temperature === 0 ? model.greedy() : sampler.sample(logits);
        produced++;
        yield { type: "tokens", tokenIds: [t] };
        if (stop.has(t)) return yield final(p, "stop", produced, cached);
        if (produced >= p.maxTokens) return yield final(p, "length", produced, cached);
        await yieldToEventLoop();
        const end = interrupted();
        if (end) return yield end;
        logits = model.forward(t, pos);
        rt.cached.push(t);
        pos++;
      }
    } finally {
      lease.release();
    }
  }

  /**
   * Before any work (no weights loaded, no lock taken): prompt + max_tokens beyond the KV
   * capacity (unless windowed), or a prompt that even at OPTIMISTIC_PREFILL_MS_PER_TOKEN could
   * not be read within the hold bound (nothing would come out).
   */
  private refuseUpFront(p: GenerateParams): BackendEvent | null {
    const cap = wasmCapacity(this.cfg);
    const n = p.promptTokenIds.length;
    if (!this.windowed && n + p.maxTokens > cap) {
      return {
        type: "error",
        code: "prompt_too_long",
        message: `the in-Worker runtime holds ${cap} tokens (prompt + completion); this request needs ${n + p.maxTokens} (${n} in the prompt, ${p.maxTokens} for the completion)`,
        retryable: false,
      };
    }
    const prefillMs = n * OPTIMISTIC_PREFILL_MS_PER_TOKEN;
    if (prefillMs > this.limits.maxHoldMs) {
      return {
        type: "error",
        code: "prompt_too_long",
        message: `reading the ${n}-token prompt would take the in-Worker runtime at least ${prefillMs} ms, more than one request may hold it (WASM_MAX_HOLD_MS ${this.limits.maxHoldMs})`,
        retryable: false,
      };
    }
    return null;
  }
}

/** The router's factory (backends/local-runtime.ts): a backend for models the runtime knows. */
export function createWasmBackend(env: Env, spec: ModelSpec): InferenceBackend | null {
  const cfg = WASM_MODELS[spec.id];
  return cfg ? new WasmBackend(env.MODELS, cfg, { limits: lockLimits(env), windowed: streamingWindowOptIn(env) }) : null;
}

/**
 * The lock's bounds (wasm/mutex.ts), from optional vars WASM_MAX_QUEUE, WASM_MAX_WAIT_MS,
 * WASM_MAX_HOLD_MS, WASM_MAX_IDLE_MS (positive integers; anything else keeps the default).
 */
export function lockLimits(env: Env): LockLimits {
  const vars = env as unknown as Partial<Record<string, unknown>>;
  const num = (name: string, dflt: number) => {
    const v = Number(vars[name]);
    return typeof vars[name] === "string" && Number.isInteger(v) && v > 0 ? v : dflt;
  };
  return {
    maxQueue: num("WASM_MAX_QUEUE", defaultLockLimits.maxQueue),
    maxWaitMs: num("WASM_MAX_WAIT_MS", defaultLockLimits.maxWaitMs),
    maxHoldMs: num("WASM_MAX_HOLD_MS", defaultLockLimits.maxHoldMs),
    maxIdleMs: num("WASM_MAX_IDLE_MS", defaultLockLimits.maxIdleMs),
  };
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

function final(p: GenerateParams, finishReason: "stop" | "length", produced: number, cached: number, cutBy?: string): BackendEvent {
  const usage = { promptTokens: p.promptTokenIds.length, completionTokens: produced, cachedTokens: cached };
  return cutBy ? { type: "final", finishReason, usage, cutBy } : { type: "final", finishReason, usage };
}

function cancelled(p: GenerateParams, produced: number, cached: number): BackendEvent {
  return { type: "final", finishReason: "cancelled", usage: { promptTokens: p.promptTokenIds.length, completionTokens: produced, cachedTokens: cached } };
}

function revokedError(lease: Lease, produced: number): BackendEvent {
  const { maxHoldMs, maxIdleMs } = lease.limits;
  return lease.revokedFor === "hold"
    ? {
        type: "error",
        code: "wasm_time_limit",
        message: `the request held the in-Worker runtime for more than ${maxHoldMs} ms and was ended after ${produced} tokens`,
        retryable: false,
      }
    : {
        type: "error",
        code: "wasm_client_stalled",
        message: `the answer was not read for more than ${maxIdleMs} ms while other requests waited for the in-Worker runtime; ended after ${produced} tokens`,
        retryable: false,
      };
}

/** Lets the response stream flush and the abort signal fire between tokens. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}
