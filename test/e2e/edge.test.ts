/**
 * The edge in real workerd (wrangler dev), driven by the official openai client: first alone
 * (auth, validation, models, health, no backend), then with the real Python pod on CPU.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEV_KEY, MODEL, podAvailable, startEdge, startPod, type Edge, type Pod } from "./stack";

let edge: Edge;
let client: OpenAI;
const messages = [{ role: "user" as const, content: "What is the capital of France?" }];

beforeAll(async () => {
  edge = await startEdge();
  client = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: DEV_KEY, maxRetries: 0, timeout: 60_000 });
});
afterAll(async () => {
  await edge?.stop();
});

describe("edge alone", () => {
  it("lists the catalog", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toContain(MODEL);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
  });

  it("GET /health is ok", async () => {
    const res = await fetch(`${edge.url}/health`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { status: string }).status).toBe("ok");
  });

  it("an unknown key is an AuthenticationError (401, invalid_api_key)", async () => {
    const bad = new OpenAI({ baseURL: `${edge.url}/v1`, apiKey: "sk-wrong-key", maxRetries: 0 });
    const err = await bad.models.list().catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err.status).toBe(401);
    expect(err.code).toBe("invalid_api_key");
  });

  it("bad input is a BadRequestError whose param names the field", async () => {
    const empty = await client.chat.completions.create({ model: MODEL, messages: [] }).catch((e) => e);
    expect(empty).toBeInstanceOf(OpenAI.BadRequestError);
    expect(empty.param).toBe("messages");
    const n2 = await client.chat.completions.create({ model: MODEL, messages, n: 2 }).catch((e) => e);
    expect(n2).toBeInstanceOf(OpenAI.BadRequestError);
    expect([n2.param, n2.code]).toEqual(["n", "unsupported_parameter"]);
    const temp = await client.completions.create({ model: MODEL, prompt: "x", temperature: 9 }).catch((e) => e);
    expect(temp.param).toBe("temperature");
  });

  it("an unknown model is a NotFoundError naming model", async () => {
    const err = await client.chat.completions.create({ model: "gpt-4o", messages }).catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(err.param).toBe("model");
  });
});

describe("in-Worker WASM runtime (no pod registered yet)", () => {
  it("answers a chat, non-stream and streamed, with the same greedy text", async () => {
    const res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0 });
    expect(res.choices[0].message.content?.length).toBeGreaterThan(0);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(8);
    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.choices.length === 0) usage = chunk.usage;
      text += chunk.choices[0]?.delta.content ?? "";
    }
    expect(text).toBe(res.choices[0].message.content);
    expect(usage?.completion_tokens).toBe(res.usage!.completion_tokens);
  });
});

describe.runIf(podAvailable())("with the real pod (CPU)", () => {
  let pod: Pod;
  beforeAll(async () => {
    pod = await startPod(edge);
  });
  afterAll(async () => {
    await pod?.stop();
  });

  let greedyText = "";

  it("non-stream chat (greedy) answers with usage", async () => {
    const { data: res, response } = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, temperature: 0 }).withResponse();
    expect(response.headers.get("x-edgeserve-route")).toContain(pod.podId);
    expect(res.object).toBe("chat.completion");
    const choice = res.choices[0];
    expect(["stop", "length"]).toContain(choice.finish_reason);
    expect(choice.message.role).toBe("assistant");
    greedyText = choice.message.content ?? "";
    expect(greedyText.length).toBeGreaterThan(0);
    expect(greedyText).toContain("Paris");
    expect(res.usage!.prompt_tokens).toBeGreaterThan(10);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(6);
    expect(res.usage!.total_tokens).toBe(res.usage!.prompt_tokens + res.usage!.completion_tokens);
  });

  it("streamed chat (greedy) gives the same text, then a usage chunk with no choices", async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      if (chunk.choices.length === 0) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content ?? "";
        finish = c.finish_reason ?? finish;
      }
    }
    expect(text).toBe(greedyText);
    expect(["stop", "length"]).toContain(finish);
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    // The first request's prompt blocks are in the pod's prefix cache now.
    expect(usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThan(0);
  });

  it("legacy completions answer, streamed and not", async () => {
    const res = await client.completions.create({ model: MODEL, prompt: "The capital of France is", max_tokens: 3, temperature: 0 });
    expect(res.object).toBe("text_completion");
    expect(res.choices[0].text.length).toBeGreaterThan(0);
    const stream = await client.completions.create({ model: MODEL, prompt: "The capital of France is", max_tokens: 3, temperature: 0, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(res.choices[0].text);
  });

  it("a client that goes away mid-stream stops the pod's work", async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "Write a long story about a fox." }], max_tokens: 400, stream: true })
      .withResponse();
    expect(response.headers.get("x-edgeserve-route")).toContain(pod.podId);
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) break; // leaving the loop aborts the HTTP request
    }
    const t0 = Date.now();
    let running = -1;
    while (Date.now() - t0 < 20_000) {
      const h = (await (await fetch(`${pod.url}/health`)).json()) as { load: { running: number; waiting: number } };
      running = h.load.running + h.load.waiting;
      if (running === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // 400 tokens at CPU speed would take minutes; the request is gone within seconds.
    expect(running).toBe(0);
  });
});
