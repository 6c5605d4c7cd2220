/**
 * The request's fields that both completion routes share, turned into a `Job`: completion
 * length checked against the context that applies on this deployment (generate/context.ts), the
 * pods that may serve it, sampling defaults (OpenAI's), stop list, SLO targets.
 */
import type { Context } from "hono";
import { ApiError } from "../errors";
import type { ModelSpec } from "../models";
import { stopList, type StopParam } from "../openai/common-schema";
import type { Kind } from "../openai/responses";
import { classify, defaultSloConfig, mergeHints, offersTools, parseSloHeader, sharedEstimator, SLO_HEADER, type SloHint } from "../slo";
import { chatStopTokenIds, type Tokenizer } from "../tokenize";
import type { AppEnv } from "../types";
import type { Job } from "./respond";
import { registryStub } from "../forward/router";
import { deploymentContext, modelContexts } from "./context";

export interface SharedFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: StopParam;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  edgeserve_slo?: SloHint | null;
  /** Chat only: tools offered to the model (they shape the SLO class). */
  tools?: unknown[] | null;
  tool_choice?: unknown;
  functions?: unknown[] | null;
  function_call?: unknown;
}

export async function buildJob(
  c: Context<AppEnv>,
  kind: Kind,
  spec: ModelSpec,
  tokenizer: Tokenizer,
  promptTokenIds: number[],
  requestedMaxTokens: number | null | undefined,
  maxTokensParam: string,
  f: SharedFields,
): Promise<Job> {
  const promptParam = kind === "chat" ? "messages" : "prompt";
  const n = promptTokenIds.length;
  if (n === 0) throw new ApiError(400, "The prompt is empty after tokenization.", { param: promptParam, code: "empty_prompt" });
  const keyName = c.get("apiKey").name;
  // Which pods serve the model (live now, or known at all), beside the estimator's first read.
  const [pods] = await Promise.all([
    spec.backends.includes("pod") ? registryStub(c.env).podsServing(spec.id) : { live: [], known: 0 },
    sharedEstimator.prime(c.env.OUTPUT_LENGTHS, keyName, spec.id, (p) => c.executionCtx.waitUntil(p)),
  ]);
  const contexts = modelContexts(c.env, spec);
  const podsKnown = pods.known > 0;
  // generate/context.ts: the runtime's capacity is the model's context when no pod serves it here.
  const ctx = deploymentContext(contexts, podsKnown, spec);
  const why = ctx === contexts.wasm && ctx !== contexts.pod ? " (the in-Worker runtime's KV cache; no GPU pod serves this model on this deployment)" : "";
  if (n >= ctx) {
    throw new ApiError(400, `This model's maximum context length is ${ctx} tokens${why}, but the prompt has ${n} tokens.`, {
      param: promptParam,
      code: "context_length_exceeded",
    });
  }
  let maxTokens: number;
  if (requestedMaxTokens != null) {
    if (n + requestedMaxTokens > ctx) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctx} tokens${why}. You requested ${n + requestedMaxTokens} tokens (${n} in the prompt, ${requestedMaxTokens} for the completion).`,
        { param: maxTokensParam, code: "context_length_exceeded" },
      );
    }
    maxTokens = requestedMaxTokens;
  } else {
    maxTokens = Math.min(kind === "chat" ? spec.defaultMaxTokens : 16, ctx - n);
  }
  // What the in-Worker runtime would run the request with: the same max_tokens if they fit its
  // context; with no max_tokens asked, the default shortened to what its context leaves.
  let localMaxTokens: number | null = null;
  if (contexts.wasm !== null) {
    const m = requestedMaxTokens != null ? maxTokens : Math.min(maxTokens, contexts.wasm - n);
    if (m >= 1 && n + m <= contexts.wasm) localMaxTokens = m;
  }
  // With no live pod the runtime serves: a default max_tokens is the runtime's.
  if (pods.live.length === 0 && localMaxTokens !== null) maxTokens = localMaxTokens;
  if (pods.live.length === 0 && podsKnown && localMaxTokens === null) {
    const local = contexts.wasm !== null ? `the in-Worker runtime holds ${contexts.wasm}` : "no in-Worker runtime serves it";
    throw new ApiError(
      503,
      `This request (${n + maxTokens} tokens: ${n} in the prompt, ${maxTokens} for the completion) needs a GPU pod for '${spec.id}' (${local}), and none is available right now; retry shortly.`,
      { code: "no_backend", headers: { "retry-after": "5" } },
    );
  }

  const stream = f.stream === true;
  const hint = mergeHints(f.edgeserve_slo ?? undefined, parseSloHeader(c.req.header(SLO_HEADER)));
  const { targets } = classify(
    {
      stream,
      hasTools: offersTools(f),
      maxTokens,
      estimatedOutputTokens: sharedEstimator.estimate(keyName, spec.id, maxTokens),
      hint,
      keyDefaults: c.get("apiKey").slo,
      nowMs: Date.now(),
    },
    defaultSloConfig,
  );
  // top_p = 0 keeps only the most likely token: greedy.
  const greedy = f.top_p === 0;
  return {
    kind,
    spec,
    tokenizer,
    promptTokenIds,
    maxTokens,
    temperature: greedy ? 0 : (f.temperature ?? 1),
    topP: greedy ? 1 : (f.top_p ?? 1),
    topK: f.top_k ?? 0,
    seed: f.seed ?? undefined,
    stop: stopList(f.stop),
    stopTokenIds: kind === "chat" ? chatStopTokenIds(tokenizer) : tokenizer.eosTokenIds,
    livePods: pods.live,
    localMaxTokens,
    stream,
    includeUsage: stream && f.stream_options?.include_usage === true,
    slo: targets,
  };
}
