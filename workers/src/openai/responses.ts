/**
 * OpenAI wire objects for answers: chat.completion(.chunk) and text_completion, plus usage.
 * Shapes follow the OpenAI API reference field for field.
 */
import type { BackendUsage, FinishReason } from "../backends/types";

export type Kind = "chat" | "completion";

export interface AnswerMeta {
  kind: Kind;
  id: string;
  created: number;
  model: string;
}

export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export function usageOf(u: BackendUsage): OpenAIUsage {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
  };
}

/** OpenAI has no "cancelled"; an answer cut short by the edge reads as "length". */
export const finishReasonOf = (r: FinishReason): "stop" | "length" => (r === "stop" ? "stop" : "length");

export function answerId(kind: Kind, requestId: string): string {
  return `${kind === "chat" ? "chatcmpl" : "cmpl"}-${requestId.replace(/^req-/, "")}`;
}

/** One streamed chunk. `delta` is the text (or the role-only first chunk for chat). */
export function chunk(
  m: AnswerMeta,
  delta: { role?: "assistant"; content?: string } | null,
  finishReason: FinishReason | null,
  includeUsage: boolean,
): object {
  const fr = finishReason === null ? null : finishReasonOf(finishReason);
  const base = { id: m.id, object: m.kind === "chat" ? "chat.completion.chunk" : "text_completion", created: m.created, model: m.model };
  const choice =
    m.kind === "chat"
      ? { index: 0, delta: delta ?? {}, logprobs: null, finish_reason: fr }
      : { index: 0, text: delta?.content ?? "", logprobs: null, finish_reason: fr };
  return {
    ...base,
    ...(m.kind === "chat" && { system_fingerprint: null }),
    choices: [choice],
    ...(includeUsage && { usage: null }),
  };
}

/** The final `include_usage` chunk: no choices, the usage. */
export function usageChunk(m: AnswerMeta, usage: BackendUsage): object {
  return {
    id: m.id,
    object: m.kind === "chat" ? "chat.completion.chunk" : "text_completion",
    created: m.created,
    model: m.model,
    ...(m.kind === "chat" && { system_fingerprint: null }),
    choices: [],
    usage: usageOf(usage),
  };
}

/** The whole answer, non-streamed. */
export function completion(m: AnswerMeta, text: string, finishReason: FinishReason, usage: BackendUsage): object {
  const fr = finishReasonOf(finishReason);
  if (m.kind === "chat") {
    return {
      id: m.id,
      object: "chat.completion",
      created: m.created,
      model: m.model,
      system_fingerprint: null,
      choices: [{ index: 0, message: { role: "assistant", content: text, refusal: null }, logprobs: null, finish_reason: fr }],
      usage: usageOf(usage),
    };
  }
  return {
    id: m.id,
    object: "text_completion",
    created: m.created,
    model: m.model,
    choices: [{ index: 0, text, logprobs: null, finish_reason: fr }],
    usage: usageOf(usage),
  };
}
