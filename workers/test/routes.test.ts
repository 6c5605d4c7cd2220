import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { expectError, get, KEY, MODEL, post, POD_SECRET, registration, seedTokenizer, TINY_KEY, TOKENS_KEY } from "./helpers";

beforeAll(seedTokenizer);

describe("public routes", () => {
  it("GET /health answers without a key", async () => {
    const res = await exports.default.fetch("http://edge/health");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; models: Record<string, unknown> };
    expect(body.status).toBe("ok");
    expect(Object.keys(body.models)).toContain(MODEL);
    expect(res.headers.get("x-request-id")).toMatch(/^req-/);
  });

  it("GET /v1/models lists the catalog in OpenAI's shape", async () => {
    const res = await get("/v1/models");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { object: string; data: { id: string; object: string; owned_by: string; created: number }[] };
    expect(body.object).toBe("list");
    expect(body.data.map((m) => m.id)).toEqual([MODEL]);
    expect(body.data[0]).toMatchObject({ object: "model", owned_by: expect.any(String), created: expect.any(Number) });
  });

  it("GET /v1/models/:id finds one and 404s the rest", async () => {
    expect(((await (await get(`/v1/models/${MODEL}`)).json()) as { id: string }).id).toBe(MODEL);
    await expectError(await get("/v1/models/gpt-9"), 404, "model");
  });

  it("echoes a well-formed x-request-id and replaces a malformed one", async () => {
    expect((await get("/v1/models", { "x-request-id": "client-id.1" })).headers.get("x-request-id")).toBe("client-id.1");
    expect((await get("/v1/models", { "x-request-id": "bad id!" })).headers.get("x-request-id")).toMatch(/^req-/);
  });
});

describe("auth", () => {
  it("401s a missing, malformed or unknown key in the error shape", async () => {
    const none = await exports.default.fetch("http://edge/v1/models");
    expect((await expectError(none, 401, null)).code).toBe("invalid_api_key");
    await expectError(await get("/v1/models", { authorization: "Basic abc" }), 401, null);
    await expectError(await get("/v1/models", { authorization: "Bearer sk-nope-nope" }), 401, null);
  });

  it("accepts a configured key", async () => {
    expect((await get("/v1/models", { authorization: `Bearer ${KEY}` })).status).toBe(200);
  });
});

describe("rate limits", () => {
  const chat = { model: MODEL, messages: [{ role: "user", content: "hi" }] };

  it("429s with Retry-After once a key's requests/min are used", async () => {
    // No pod, and no WASM weights in this test's R2: admitted requests end in 503, but they count.
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await post("/v1/chat/completions", chat, { authorization: `Bearer ${TINY_KEY}` });
      statuses.push(res.status);
      if (res.status === 429) {
        const e = await expectError(res, 429, null);
        expect(e.type).toBe("rate_limit_error");
        expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        expect(Number(res.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      } else {
        await res.body?.cancel();
      }
    }
    expect(statuses).toEqual([503, 503, 429]);
  });

  it("429s a prompt above the key's tokens/min", async () => {
    const res = await post("/v1/chat/completions", { ...chat, messages: [{ role: "user", content: "word ".repeat(100) }] }, { authorization: `Bearer ${TOKENS_KEY}` });
    expect((await expectError(res, 429, null)).code).toBe("tokens_rate_limit_exceeded");
  });
});

describe("model without a live pod", () => {
  it("falls to the in-Worker runtime, which answers 503 model_not_installed while R2 lacks the weights", async () => {
    const res = await post("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "hi" }] });
    const e = await expectError(res, 503, null);
    expect(e.code).toBe("model_not_installed");
    expect(e.message).toContain("models/smollm2-135m-instruct-q4_1.gguf");
  });
});

describe("pod endpoints", () => {
  const internal = (path: string, body: unknown, secret = POD_SECRET) =>
    exports.default.fetch(
      new Request(`http://edge${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }),
    );

  it("register answers heartbeat_ms and the pod shows in /health", async () => {
    const res = await internal("/internal/pods/register", registration("pod-reg-1", "http://127.0.0.1:9"));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, heartbeat_ms: 2000 });
    const health = (await (await exports.default.fetch("http://edge/health")).json()) as { models: Record<string, { live_pods: string[] }> };
    expect(health.models[MODEL].live_pods).toContain("pod-reg-1");
    expect((await internal("/internal/pods/heartbeat", registration("pod-reg-1", "http://127.0.0.1:9", { running: 3 }))).status).toBe(200);
  });

  it("refuses a wrong secret (401) and a bad registration (400 naming the field)", async () => {
    await expectError(await internal("/internal/pods/register", registration("p", "http://x"), "wrong-secret"), 401, null);
    await expectError(await internal("/internal/pods/register", { ...registration("p", "http://x"), role: "boss" }), 400, "role");
    await expectError(await internal("/internal/pods/register", { ...registration("p", "ftp://x") }), 400, "url");
    await expectError(await internal("/internal/pods/register", { ...registration("p", "http://x"), load: { running: -1 } }), 400, "load.running");
    await expectError(await internal("/internal/pods/register", { ...registration("p", "http://x"), extra: 1 }), 400, "extra");
  });

  it("internal endpoints do not take API keys", async () => {
    await expectError(await internal("/internal/pods/register", registration("p", "http://x"), KEY), 401, null);
    void env;
  });
});
