/**
 * Cheap refusals the completion routes make before they pay for tokenization (up to 1M
 * characters per text field, 4 MiB per body): a key already over its limits, and text so long
 * that no tokenization could fit it in the model's context.
 */
import type { Context } from "hono";
import { ApiError } from "../errors";
import type { ModelSpec } from "../models";
import type { Tokenizer } from "../tokenize";
import type { AppEnv } from "../types";

/**
 * 429 when the key could not be admitted even with a one-token prompt (requests/min used up, or
 * tokens/min used up). The RateLimiter's `admit` (generate/rate-limit.ts) still decides for the
 * tokenized prompt; this costs one read of the same Durable Object and records nothing.
 */
export async function refuseIfOverLimit(c: Context<AppEnv>): Promise<void> {
  const key = c.get("apiKey");
  const stub = c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(key.name));
  const result = await stub.check({ rpm: key.rpm, tpm: key.tpm });
  if (!result.ok) {
    throw new ApiError(429, result.message, {
      type: "rate_limit_error",
      code: result.limit === "requests" ? "rate_limit_exceeded" : "tokens_rate_limit_exceeded",
      headers: { "retry-after": String(result.retryAfterS) },
    });
  }
}

/**
 * 400 context_length_exceeded for text that must tokenize to at least the whole context. No token
 * of `tokenizer` stands for more than `maxTokenBytes` UTF-8 bytes, and a string's UTF-16 length
 * never exceeds its UTF-8 length, so `text` has at least ceil(text.length / maxTokenBytes)
 * tokens; above (contextLength - 1) x maxTokenBytes characters that is the whole context or more,
 * which buildJob would refuse after tokenizing. Sound, never a false refusal: for SmolLM2 (81
 * bytes at most, a newline and 80 spaces) the bound is 663 471 characters.
 */
export function refuseTextBeyondContext(text: string, spec: ModelSpec, tokenizer: Tokenizer, param: string): void {
  const ctx = spec.contextLength;
  const most = (ctx - 1) * tokenizer.maxTokenBytes;
  if (text.length > most) {
    const atLeast = Math.ceil(text.length / tokenizer.maxTokenBytes);
    throw new ApiError(
      400,
      `This model's maximum context length is ${ctx} tokens, but the prompt has ${text.length} characters, which is at least ${atLeast} tokens (no token of this model stands for more than ${tokenizer.maxTokenBytes} characters).`,
      { param, code: "context_length_exceeded" },
    );
  }
}
