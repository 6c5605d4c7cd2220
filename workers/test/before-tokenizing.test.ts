/**
 * The completion routes refuse before tokenizing: a key already over its requests/min, and text
 * too long for any tokenization to fit the context (A3 items 4 and 5).
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import type { RateLimiter } from "../src/durable/rate-limiter";
import { expectError, MODEL, post, registration, seedTokenizer, tokenizerData } from "./helpers";

const registry = () => env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName("global"));

beforeAll(seedTokenizer);

// rpm 1 (vitest.config.ts): one admitted request uses the key's minute.
const EARLY_KEY = "sk-test-early-000";
// "hello world " is 2 tokens per 12 characters: 120 000 characters are ~20 000 tokens, above the
// 8192-token context but under the character bound (8191 x 81), so only tokenizing can tell.
const tooManyTokens = "hello world ".repeat(10_000);

describe("a key over its requests/min is refused before its prompt is tokenized", () => {
  it("429s a prompt that tokenizing would have refused as too long (chat and completions)", async () => {
    const auth = { authorization: `Bearer ${EARLY_KEY}` };
    // Before the key is used, the long prompt is a 400 found by tokenizing.
    const first = await post("/v1/completions", { model: MODEL, prompt: tooManyTokens }, auth);
    expect((await expectError(first, 400, "prompt")).code).toBe("context_length_exceeded");
    // One admitted request (no pod, no WASM weights: a 503, but it counts) uses the minute.
    const admitted = await post("/v1/completions", { model: MODEL, prompt: "hi", max_tokens: 1 }, auth);
    expect(admitted.status).toBe(503);
    await admitted.body?.cancel();
    for (const [path, body] of [
      ["/v1/completions", { model: MODEL, prompt: tooManyTokens }],
      ["/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: tooManyTokens }] }],
    ] as const) {
      const res = await post(path, body, auth);
      const e = await expectError(res, 429, null);
      expect(e.code).toBe("rate_limit_exceeded");
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
  });

  it("RateLimiter.check records nothing and refuses when one more request or token would not fit", async () => {
    const stub = env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName("check-test"));
    await runInDurableObject(stub, (rl: RateLimiter) => {
      const t0 = 1_000_000;
      expect(rl.check({ rpm: 1, tpm: 10 }, t0)).toMatchObject({ ok: true, remainingRequests: 1, remainingTokens: 10 });
      expect(rl.usage(t0)).toEqual({ requests: 0, tokens: 0 });
      expect(rl.admit({ rpm: 2, tpm: 10 }, 10, t0).ok).toBe(true);
      expect(rl.check({ rpm: 1, tpm: 100 }, t0 + 1)).toMatchObject({ ok: false, limit: "requests", retryAfterS: 60 });
      expect(rl.check({ rpm: 2, tpm: 10 }, t0 + 1)).toMatchObject({ ok: false, limit: "tokens" });
      expect(rl.check({ rpm: 2, tpm: 11 }, t0 + 1).ok).toBe(true);
    });
  });
});

describe("text beyond any tokenization of the context is a 400 before tokenizing", () => {
  // 960 000 characters (A3's case: a 500 from a stack overflow in the pre-tokenizer, then seconds
  // of tokenizing). Above 8191 x 81 = 663 471 characters.
  const huge = "hello world ".repeat(80_000);

  it("chat and completions answer context_length_exceeded naming the field", async () => {
    const chat = await post("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: huge }] });
    const e1 = await expectError(chat, 400, "messages");
    expect(e1.code).toBe("context_length_exceeded");
    expect(e1.message).toMatch(/characters, which is at least \d+ tokens/);
    const comp = await post("/v1/completions", { model: MODEL, prompt: huge });
    const e2 = await expectError(comp, 400, "prompt");
    expect(e2.code).toBe("context_length_exceeded");
    expect(e2.message).toMatch(/characters, which is at least \d+ tokens/);
  });

  it("the bound is sound: text just under it that fits the context is not refused by it", async () => {
    // 81-byte tokens (a newline and 80 spaces) make the densest text: 8000 of them are 648 000
    // characters and 8000 tokens, under the 8192 context. The request gets past the bound and
    // the tokenizer, not a 400. A pod serves the model on this deployment (so the context is the
    // catalog's 8192, not the in-Worker runtime's 512) but none is live: a 503 no_backend.
    await registry().upsert(registration("pod-stale", "http://pod-stale.test"), Date.now() - 60_000);
    const dense = ("\n" + " ".repeat(80)).repeat(8_000) + "x";
    expect(tokenizerData.tokens.some((t: string) => t === "Ċ" + "Ġ".repeat(80))).toBe(true);
    const res = await post("/v1/completions", { model: MODEL, prompt: dense, max_tokens: 1 });
    expect(res.status).toBe(503);
    expect(((await res.json()) as any).error.code).toBe("no_backend");
    await registry().remove("pod-stale");
  });
});
