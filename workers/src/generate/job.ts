/**
 * The request's fields that both completion routes share, turned into a `Job`: completion
 * length checked against the context, sampling defaults (OpenAI's), stop list, SLO targets.
 */
import type { Context } from "hono";
import { ApiError } from "../errors";
import type { ModelSpec } from "../models";
import { stopList, type StopParam } from "../openai/common-schema";
import type { Kind } from "../openai/responses";
import { classify, defaultSloConfig, mergeHints, offersTools, parseSloHeader, sharedEstimator, SLO_HEADER, type SloHint } from "../slo";
import type { Tokenizer } from "../tokenize";
import type { AppEnv } from "../types";
import type { Job } from "./respond";

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
  const ctx = spec.contextLength;
  const n = promptTokenIds.length;
  if (n === 0) throw new ApiError(400, "The prompt is empty after tokenization.", { param: promptParam, code: "empty_prompt" });
  if (n >= ctx) {
    throw new ApiError(400, `This model's maximum context length is ${ctx} tokens, but the prompt has ${n} tokens.`, {
      param: promptParam,
      code: "context_length_exceeded",
    });
  }
  let maxTokens: number;
  if (requestedMaxTokens != null) {
    if (n + requestedMaxTokens > ctx) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctx} tokens. You requested ${n + requestedMaxTokens} tokens (${n} in the prompt, ${requestedMaxTokens} for the completion).`,
        { param: maxTokensParam, code: "context_length_exceeded" },
      );
    }
    maxTokens = requestedMaxTokens;
  } else {
    maxTokens = Math.min(kind === "chat" ? spec.defaultMaxTokens : 16, ctx - n);
  }

  const stream = f.stream === true;
  const hint = mergeHints(f.edgeserve_slo ?? undefined, parseSloHeader(c.req.header(SLO_HEADER)));
  const keyName = c.get("apiKey").name;
  await sharedEstimator.prime(c.env.OUTPUT_LENGTHS, keyName, spec.id, (p) => c.executionCtx.waitUntil(p));
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
    stream,
    includeUsage: stream && f.stream_options?.include_usage === true,
    slo: targets,
  };
}
