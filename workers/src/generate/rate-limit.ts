/** The route side of the RateLimiter DO: admit before routing, charge completion tokens after. */
import type { Context } from "hono";
import { ApiError } from "../errors";
import type { AppEnv } from "../types";

function limiter(c: Context<AppEnv>) {
  return c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(c.get("apiKey").name));
}

/** The 429 for a limiter answer that is not ok. */
function tooMany(result: { message: string; limit: string; retryAfterS: number }): ApiError {
  return new ApiError(429, result.message, {
    type: "rate_limit_error",
    code: result.limit === "requests" ? "rate_limit_exceeded" : "tokens_rate_limit_exceeded",
    headers: { "retry-after": String(result.retryAfterS) },
  });
}

/**
 * 429 when the key could not be admitted even with a one-token prompt (requests/min used up, or
 * tokens/min used up), before the routes pay for tokenizing. `admit` still decides for the
 * tokenized prompt; this costs one read of the same Durable Object and records nothing.
 */
export async function refuseIfOverLimit(c: Context<AppEnv>): Promise<void> {
  const key = c.get("apiKey");
  const result = await limiter(c).check({ rpm: key.rpm, tpm: key.tpm });
  if (!result.ok) throw tooMany(result);
}

export async function admit(c: Context<AppEnv>, promptTokens: number): Promise<void> {
  const key = c.get("apiKey");
  const result = await limiter(c).admit({ rpm: key.rpm, tpm: key.tpm }, promptTokens);
  if (!result.ok) throw tooMany(result);
  c.header("x-ratelimit-limit-requests", String(key.rpm));
  c.header("x-ratelimit-remaining-requests", String(result.remainingRequests));
  c.header("x-ratelimit-limit-tokens", String(key.tpm));
  c.header("x-ratelimit-remaining-tokens", String(result.remainingTokens));
}

export function chargeLater(c: Context<AppEnv>, completionTokens: number): void {
  if (completionTokens > 0) c.executionCtx.waitUntil(limiter(c).charge(completionTokens).catch(() => {}));
}
