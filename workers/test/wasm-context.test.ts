/**
 * Audit A4's edge findings on the default (in-Worker WASM) path, through the real edge with the
 * pod double where a pod is needed. This test's R2 holds the tokenizer but no WASM weights, so a
 * request the runtime accepts ends in its 503 model_not_installed: what matters here is what is
 * refused before any work, and what reaches which backend.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Tokenizer } from "@edgeserve/kernels-wasm/tokenizer";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { WASM_MODELS, wasmCapacity } from "../src/backends/wasm";
import { clearTokenizerCache } from "../src/tokenize";
import { expectError, KEY, MODEL, registerPod, registration, resetPods, seedTokenizer, tokenizerData } from "./helpers";
import { PodDouble, tokenSteps } from "./pod-double";

const tok = Tokenizer.fromJSON(tokenizerData);
const CAP = wasmCapacity(WASM_MODELS[MODEL]);
const IM_START = tok.encode("<|im_start|>")[0];

async function call(body: unknown, opts: { double?: PodDouble; vars?: Record<string, string>; path?: string } = {}) {
  const double = opts.double ?? new PodDouble({});
  const app = createApp({ fetch: double.fetch });
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`http://edge${opts.path ?? "/v1/chat/completions"}`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
    { ...env, ...opts.vars },
    ctx,
  );
  return { res, ctx, double };
}

async function getJson(path: string): Promise<any> {
  const res = await createApp().fetch(new Request(`http://edge${path}`, { headers: { authorization: `Bearer ${KEY}` } }), env, createExecutionContext());
  expect(res.status).toBe(200);
  return res.json();
}

/** A user message of about `tokens` tokens. */
const longText = (tokens: number) => "word ".repeat(tokens);
const chat = (content: string, extra: Record<string, unknown> = {}) => ({ model: MODEL, messages: [{ role: "user", content }], ...extra });
const registry = () => env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName("global"));
const tokensUsed = async () => (await env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName("test-main")).usage()).tokens;
/** The prompt ids a pod got. */
const promptIds = (double: PodDouble) => double.generateCalls[0].body.prompt_token_ids;

beforeAll(seedTokenizer);
beforeEach(resetPods);

describe("no pod serves the model on this deployment: the runtime's KV capacity is the context", () => {
  it("the runtime holds sink + window = 512 tokens", () => {
    expect(CAP).toBe(512);
  });

  it("prompt + max_tokens above it is a 400 context_length_exceeded naming 512, before any work", async () => {
    const before = await tokensUsed();
    const { res } = await call(chat("Hi", { max_tokens: 600 }));
    const err = await expectError(res, 400, "max_tokens");
    expect(err.code).toBe("context_length_exceeded");
    expect(err.message).toContain(`maximum context length is ${CAP} tokens`);
    // Refused before admission: nothing charged.
    expect(await tokensUsed()).toBe(before);
  });

  it("a prompt of ~900 tokens (the audit's needle) is a 400 naming messages, not a windowed 200", async () => {
    const { res } = await call(chat(`My name is Zelda.\n${longText(900)}\nWhat is my name?`, { max_tokens: 8 }));
    const err = await expectError(res, 400, "messages");
    expect(err.code).toBe("context_length_exceeded");
    expect(err.message).toContain(`${CAP} tokens`);
  });

  it("with no max_tokens, the default completion shrinks to what the runtime leaves (reaches the runtime)", async () => {
    const { res } = await call(chat(longText(300)));
    // The runtime's own 503 (no weights in this R2): the request was not refused as too long.
    expect((await expectError(res, 503, null)).code).toBe("model_not_installed");
  });

  it("WASM_STREAMING_WINDOW=1 opts in to windowing: the same request goes to the runtime", async () => {
    const { res } = await call(chat("Hi", { max_tokens: 600 }), { vars: { WASM_STREAMING_WINDOW: "1" } });
    expect((await expectError(res, 503, null)).code).toBe("model_not_installed");
  });

  it("a prompt the runtime could not even read within WASM_MAX_HOLD_MS is refused up front", async () => {
    // ~150 tokens at >= 10 ms a token is more than a 1 s hold.
    const { res } = await call(chat(longText(150), { max_tokens: 4 }), { vars: { WASM_MAX_HOLD_MS: "1000" } });
    const err = await expectError(res, 400, "messages");
    expect(err.code).toBe("context_length_exceeded");
    expect(err.message).toContain("WASM_MAX_HOLD_MS");
  });

  it("/v1/models and /health advertise the runtime's 512, not 8192; 8192 once a pod serves the model", async () => {
    expect((await getJson("/v1/models")).data[0].max_model_len).toBe(CAP);
    expect((await getJson(`/v1/models/${MODEL}`)).max_model_len).toBe(CAP);
    expect((await getJson("/health")).models[MODEL].context_length).toEqual({ pod: 8192, wasm: CAP });
    await registerPod("pod-a", "http://pod-a.test");
    expect((await getJson("/v1/models")).data[0].max_model_len).toBe(8192);
  });
});

describe("pods serve the model", () => {
  it("none live now: a request only a pod can hold is a 503 no_backend with Retry-After, not windowed", async () => {
    // Known to the registry but silent for a minute: stale.
    await registry().upsert(registration("pod-stale", "http://pod-stale.test"), Date.now() - 60_000);
    const { res, double } = await call(chat("Hi", { max_tokens: 600 }));
    const err = await expectError(res, 503, null);
    expect(err.code).toBe("no_backend");
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(double.generateCalls).toHaveLength(0);
    // Beyond the catalog's context it is still the client's 400.
    expect((await expectError((await call(chat("Hi", { max_tokens: 9000 }))).res, 400, "max_tokens")).code).toBe("context_length_exceeded");
  });

  it("one live pod: a request beyond 512 has no in-Worker fallback (the pod's failure is the answer)", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { throws: "down" } });
    const { res } = await call(chat("Hi", { max_tokens: 600 }), { double });
    // (with the runtime as the retry this would be its 503 model_not_installed)
    expect((await expectError(res, 502, null)).code).toBe("backend_error");
    expect(double.generateCalls).toHaveLength(1);
  });

  it("one live pod: a request within 512 keeps the runtime as its retry", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const { res } = await call(chat("Hi", { max_tokens: 16 }), { double: new PodDouble({ "pod-a.test": { throws: "down" } }) });
    expect((await expectError(res, 503, null)).code).toBe("model_not_installed");
  });
});

describe("chat messages as the template gets them", () => {
  it("the developer role is templated as system (SmolLM2 never saw 'developer')", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { steps: tokenSteps(tok.encode("ok", { parseSpecial: false })) } });
    const { res } = await call({ model: MODEL, messages: [{ role: "developer", content: "Be brief." }, { role: "user", content: "Hi" }] }, { double });
    expect(res.status).toBe(200);
    // As if it were a system message: it replaces the template's default system prompt.
    expect(promptIds(double)).toEqual(tok.encode("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
  });

  it("a message's name reaches a template that uses it", async () => {
    const data = { ...tokenizerData, chatTemplate: "{% for message in messages %}<|im_start|>{{ message['role'] }}{% if message['name'] %} ({{ message['name'] }}){% endif %}{{ '\\n' + message['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant" };
    await env.MODELS.put(`tokenizers/${MODEL}.json`, JSON.stringify(data));
    clearTokenizerCache();
    try {
      await registerPod("pod-a", "http://pod-a.test");
      const double = new PodDouble({ "pod-a.test": { steps: tokenSteps(tok.encode("ok", { parseSpecial: false })) } });
      const { res } = await call({ model: MODEL, messages: [{ role: "user", content: "Hi", name: "alice" }, { role: "user", content: "Yo" }] }, { double });
      expect(res.status).toBe(200);
      expect(promptIds(double)).toEqual(tok.encode("<|im_start|>user (alice)\nHi<|im_end|>\n<|im_start|>user\nYo<|im_end|>\n<|im_start|>assistant"));
    } finally {
      await seedTokenizer();
      clearTokenizerCache();
    }
  });

  it("a chat answer stops at <|im_start|> (the model starting the next turn): hidden, finish_reason stop", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const ids = [...tok.encode("Hi there", { parseSpecial: false }), IM_START, ...tok.encode("user\nMore", { parseSpecial: false })];
    const double = new PodDouble({ "pod-a.test": { steps: [{ tokens: ids }, { final: "length" }] } });
    const { res } = await call(chat("Hi"), { double });
    const body = (await res.json()) as any;
    expect(body.choices[0]).toMatchObject({ message: { content: "Hi there" }, finish_reason: "stop" });
    expect(double.generateCalls[0].body.stop_token_ids).toEqual([...tok.eosTokenIds, IM_START]);
    // Legacy completions have no turns: EOS only.
    const legacy = new PodDouble({ "pod-a.test": { steps: tokenSteps(tok.encode("x", { parseSpecial: false })) } });
    await call({ model: MODEL, prompt: "Hi" }, { double: legacy, path: "/v1/completions" });
    expect(legacy.generateCalls[0].body.stop_token_ids).toEqual(tok.eosTokenIds);
  });
});

describe("charging", () => {
  it("a non-streamed answer that fails mid-way returns no text and is charged no completion tokens", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { steps: [{ tokens: tok.encode("one two three", { parseSpecial: false }) }, { error: "internal_error", message: "GPU fell off" }] } });
    const before = await tokensUsed();
    const { res, ctx } = await call(chat("Hi"), { double });
    expect((await expectError(res, 502, null)).code).toBe("backend_error");
    await waitOnExecutionContext(ctx);
    expect((await tokensUsed()) - before).toBe(double.generateCalls[0].body.prompt_token_ids.length);
  });
});
