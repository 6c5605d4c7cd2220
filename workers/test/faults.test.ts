/**
 * The whole edge (validation → tokenizer → registry → routing → pod backend → detokenizer →
 * OpenAI wire format) against an in-process pod double that injects faults: refused
 * connections, overload, broken and truncated streams, mid-answer failures, silence, and
 * clients that leave. The double stands only for the pod; everything else is the real edge.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Tokenizer } from "@edgeserve/kernels-wasm/tokenizer";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { expectError, KEY, MODEL, registerPod, resetPods, seedTokenizer, sseEvents, tokenizerData } from "./helpers";
import { PodDouble, tokenSteps, type Behaviour } from "./pod-double";

const tok = Tokenizer.fromJSON(tokenizerData);
const ANSWER = "Hello, world! 🦊 café";
const answerIds = tok.encode(ANSWER, { parseSpecial: false });
const userMessages = [{ role: "user", content: "Say hello." }];

async function call(double: PodDouble, path: string, body: unknown, vars: Record<string, string> = {}, signal?: AbortSignal) {
  const app = createApp({ fetch: double.fetch });
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`http://edge${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "x-request-id": `t-${crypto.randomUUID()}` },
      body: JSON.stringify(body),
      signal,
    }),
    { ...env, ...vars },
    ctx,
  );
  // The id the pods see is the edge's own, not the client's x-request-id.
  const upstreamId = () => double.generateCalls[0]?.body.request_id;
  return { res, ctx, upstreamId };
}

/** Tokens charged to KEY's limiter in its current window (prompt + completion). */
async function tokensUsed(): Promise<number> {
  return (await env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName("test-main")).usage()).tokens;
}

/** Reads the SSE body until `text` has arrived. */
async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, text: string): Promise<void> {
  const dec = new TextDecoder();
  let content = "";
  while (!content.includes(text)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`stream ended before ${JSON.stringify(text)}`);
    for (const m of dec.decode(value).matchAll(/"content":"((?:[^"\\]|\\.)*)"/g)) content += JSON.parse(`"${m[1]}"`);
  }
}

/** Pods a (idle) and b (busier, so the fallback), behind the double. */
async function twoPods(a: Behaviour, b: Behaviour): Promise<PodDouble> {
  await registerPod("pod-a", "http://pod-a.test");
  await registerPod("pod-b", "http://pod-b.test", { running: 8, waiting: 8 });
  return new PodDouble({ "pod-a.test": a, "pod-b.test": b });
}

beforeAll(seedTokenizer);
beforeEach(resetPods);

describe("happy path through a pod", () => {
  it("non-stream chat: the pod gets the templated token ids; the client gets OpenAI's chat.completion", async () => {
    const double = await twoPods({ steps: tokenSteps(answerIds) }, { throws: "unused" });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, max_tokens: 40, temperature: 0.5, seed: 3 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    const expectedPrompt = tok.encode(tok.applyChatTemplate(userMessages, { addGenerationPrompt: true }));
    expect(double.generateCalls).toHaveLength(1);
    const sent = double.generateCalls[0].body;
    expect(double.generateCalls[0].host).toBe("pod-a.test");
    expect(sent.prompt_token_ids).toEqual(expectedPrompt);
    expect(sent.max_tokens).toBe(40);
    // The pod sees the edge's own unique id, never the client's x-request-id.
    expect(sent.request_id).toMatch(/^req-[0-9a-f]{32}$/);
    expect(sent.sampling).toEqual({ temperature: 0.5, top_p: 1, top_k: 0, seed: 3 });
    // Chat: EOS and the template's turn marker <|im_start|> (workers/src/tokenize chatStopTokenIds).
    expect(sent.stop_token_ids).toEqual([...tok.eosTokenIds, tok.encode("<|im_start|>")[0]]);
    expect(sent.slo?.class).toBeDefined();
    expect(body).toMatchObject({
      object: "chat.completion",
      model: MODEL,
      choices: [{ index: 0, message: { role: "assistant", content: ANSWER }, finish_reason: "stop", logprobs: null }],
      usage: { prompt_tokens: expectedPrompt.length, completion_tokens: answerIds.length, total_tokens: expectedPrompt.length + answerIds.length },
    });
    expect(body.id).toMatch(/^chatcmpl-/);
  });

  it("stream chat with include_usage: role chunk, content chunks, finish chunk, usage chunk with choices [], [DONE]", async () => {
    // The fox emoji is 4 UTF-8 bytes; byte-level BPE splits it over several tokens.
    expect(answerIds.length).toBeGreaterThan(ANSWER.split(" ").length + 2);
    const double = await twoPods({ steps: tokenSteps(answerIds) }, { throws: "unused" });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true, stream_options: { include_usage: true } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = await sseEvents(res);
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1) as any[];
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    const usage = chunks.at(-1);
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toMatchObject({ completion_tokens: answerIds.length });
    const finish = chunks.at(-2);
    expect(finish.choices[0]).toEqual({ index: 0, delta: {}, logprobs: null, finish_reason: "stop" });
    for (const c of chunks.slice(0, -1)) {
      expect(c).toMatchObject({ object: "chat.completion.chunk", model: MODEL, usage: null });
      expect(c.id).toBe(chunks[0].id);
    }
    const pieces = chunks.slice(1, -2).map((c) => c.choices[0].delta.content as string);
    expect(pieces.join("")).toBe(ANSWER);
    expect(pieces.some((p) => p.includes("\uFFFD"))).toBe(false);
    expect(pieces.some((p) => p.includes("🦊"))).toBe(true);
  });

  it("stream legacy completion: text_completion chunks, no role chunk, [DONE]", async () => {
    const double = await twoPods({ steps: tokenSteps(answerIds, "length") }, { throws: "unused" });
    const { res } = await call(double, "/v1/completions", { model: MODEL, prompt: "Once upon", stream: true, max_tokens: answerIds.length });
    const events = await sseEvents(res);
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1) as any[];
    expect(chunks.every((c) => c.object === "text_completion" && !("usage" in c))).toBe(true);
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(ANSWER);
    expect(chunks.at(-1).choices[0].finish_reason).toBe("length");
    expect(double.generateCalls[0].body.prompt_token_ids).toEqual(tok.encode("Once upon", { addSpecial: true, parseSpecial: false }));
  });

  it("a stop sequence ends the answer before it and cancels the pod's work", async () => {
    const ids = tok.encode("one two STOP three four", { parseSpecial: false });
    const double = await twoPods({ steps: [...ids.map((id) => ({ tokens: [id] })), { hang: true }] }, { throws: "unused" });
    const { res, ctx, upstreamId } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stop: ["STOP"] });
    const body = (await res.json()) as any;
    expect(body.choices[0]).toMatchObject({ message: { content: "one two " }, finish_reason: "stop" });
    await waitOnExecutionContext(ctx);
    expect(double.cancelled(upstreamId()!)).toBe(true);
  });

  it("EOS tokens end the text and never show in it", async () => {
    const double = await twoPods({ steps: [{ tokens: [...tok.encode("Hi", { parseSpecial: false }), tok.eosTokenIds[0]] }, { final: "stop" }] }, { throws: "unused" });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    expect(((await res.json()) as any).choices[0].message.content).toBe("Hi");
  });
});

describe("faults before the first token: one retry on another pod", () => {
  const cases: [string, Behaviour][] = [
    ["connection refused", { throws: "connect ECONNREFUSED" }],
    ["503 overloaded error record", { status: 503, body: { type: "error", error: { code: "overloaded", message: "queue full" } } }],
    ["500 without a body", { status: 500 }],
    ["error record as the first stream line", { steps: [{ error: "internal_error" }] }],
    ["stream ends with no record", { steps: [] }],
    ["garbage instead of NDJSON", { steps: [{ raw: "<html>oops</html>\n" }] }],
  ];
  for (const [name, fault] of cases) {
    it(`${name} on pod a → pod b answers`, async () => {
      const double = await twoPods(fault, { steps: tokenSteps(answerIds) });
      const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
      expect(res.status).toBe(200);
      expect(((await res.json()) as any).choices[0].message.content).toBe(ANSWER);
      expect(double.generateCalls.map((c) => c.host)).toEqual(["pod-a.test", "pod-b.test"]);
    });
  }

  it("both pods fail → 502 in the error shape, nothing streamed", async () => {
    const double = await twoPods({ throws: "down" }, { status: 500 });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true });
    const e = await expectError(res, 502, null);
    expect(e.code).toBe("backend_error");
    expect(double.generateCalls).toHaveLength(2);
  });

  it("only one retry: a third pod is not tried", async () => {
    await registerPod("pod-c", "http://pod-c.test", { running: 20 });
    const double = await twoPods({ throws: "down" }, { throws: "down too" });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    expect(res.status).toBe(502);
    expect(double.generateCalls).toHaveLength(2);
  });

  it("a 400 from the pod is not retried (the request, not the pod, is at fault)", async () => {
    const double = await twoPods({ status: 400, body: { type: "error", error: { code: "invalid_request", message: "bad", param: "max_tokens" } } }, { steps: tokenSteps(answerIds) });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    expect(res.status).toBe(502);
    expect(double.generateCalls).toHaveLength(1);
  });

  it("prompt_too_long from the pod is the client's 400 naming messages", async () => {
    const double = await twoPods({ status: 400, body: { type: "error", error: { code: "prompt_too_long", message: "2048 max" } } }, { throws: "unused" });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    expect((await expectError(res, 400, "messages")).code).toBe("context_length_exceeded");
  });

  it("pods that never answer time out (504) after the connect timeout", async () => {
    const double = await twoPods({ silent: true }, { silent: true });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages }, { POD_CONNECT_TIMEOUT_MS: "150" });
    expect((await expectError(res, 504, null)).code).toBe("backend_timeout");
    expect(double.generateCalls.map((c) => c.aborted())).toEqual([true, true]);
  });

  it("with one live pod, the retry goes to the in-Worker runtime", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { throws: "down" } });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    // No WASM weights in this test's R2, so the runtime's own clear 503 is what comes back.
    expect((await expectError(res, 503, null)).code).toBe("model_not_installed");
    expect(double.generateCalls).toHaveLength(1);
  });
});

describe("faults after the first token", () => {
  it("stream: a mid-answer pod error becomes a data: {error} event, then [DONE]; no retry; the 3 tokens are charged", async () => {
    const double = await twoPods({ steps: [{ tokens: answerIds.slice(0, 3) }, { error: "internal_error", message: "GPU fell off" }] }, { steps: tokenSteps(answerIds) });
    const before = await tokensUsed();
    const { res, ctx } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true });
    expect(res.status).toBe(200);
    const events = await sseEvents(res);
    expect(events.at(-1)).toBe("[DONE]");
    const err = events.at(-2) as any;
    expect(Object.keys(err)).toEqual(["error"]);
    expect(err.error).toMatchObject({ type: "server_error", param: null, code: "internal_error" });
    expect(err.error.message).toContain("GPU fell off");
    expect(double.generateCalls).toHaveLength(1);
    await waitOnExecutionContext(ctx);
    expect((await tokensUsed()) - before).toBe(double.generateCalls[0].body.prompt_token_ids.length + 3);
  });

  it("stream: a truncated pod stream ends with an error event and [DONE]", async () => {
    const double = await twoPods({ steps: [{ tokens: answerIds.slice(0, 2) }] }, { throws: "unused" });
    const { res } = await call(double, "/v1/completions", { model: MODEL, prompt: "x", stream: true });
    const events = await sseEvents(res);
    expect((events.at(-2) as any).error.code).toBe("pod_stream_truncated");
    expect(events.at(-1)).toBe("[DONE]");
  });

  it("stream: a pod that goes silent mid-answer hits the idle timeout", async () => {
    const double = await twoPods({ steps: [{ tokens: answerIds.slice(0, 2) }, { hang: true }] }, { throws: "unused" });
    const { res, ctx, upstreamId } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true }, { POD_IDLE_TIMEOUT_MS: "150" });
    const events = await sseEvents(res);
    expect((events.at(-2) as any).error.code).toBe("pod_timeout");
    await waitOnExecutionContext(ctx);
    expect(double.cancelled(upstreamId()!)).toBe(true);
  });

  it("non-stream: a mid-answer failure is a 502, not a partial answer", async () => {
    const double = await twoPods({ steps: [{ tokens: answerIds.slice(0, 3) }, { error: "internal_error" }] }, { steps: tokenSteps(answerIds) });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    await expectError(res, 502, null);
  });
});

describe("client disconnect", () => {
  // Four tokens come, then the pod goes quiet: what the client leaves behind is known exactly.
  const fourThenHang = { steps: [{ tokens: answerIds.slice(0, 2) }, { tokens: answerIds.slice(2, 4), delayMs: 20 }, { hang: true as const }] };
  const fourText = tok.decode(answerIds.slice(0, 4));

  it("cancelling the SSE body aborts the pod request, POSTs /v1/cancel and charges the 4 tokens", async () => {
    const double = await twoPods(fourThenHang, { throws: "unused" });
    const before = await tokensUsed();
    const { res, ctx, upstreamId } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true });
    const reader = res.body!.getReader();
    await readUntil(reader, fourText);
    await reader.cancel();
    await waitOnExecutionContext(ctx);
    expect(double.generateCalls[0].aborted()).toBe(true);
    expect(double.cancels).toEqual([{ host: "pod-a.test", requestId: upstreamId(), authorized: true }]);
    expect((await tokensUsed()) - before).toBe(double.generateCalls[0].body.prompt_token_ids.length + 4);
  });

  // What workerd does when a client leaves: the request's signal aborts, and the stream is never
  // read or cancelled again (its pending awaits never resume, so no generator finally runs).
  it("aborting the request's signal alone POSTs /v1/cancel and charges the 4 tokens", async () => {
    const double = await twoPods(fourThenHang, { throws: "unused" });
    const before = await tokensUsed();
    const client = new AbortController();
    const { res, ctx, upstreamId } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true }, {}, client.signal);
    const reader = res.body!.getReader();
    await readUntil(reader, fourText);
    // The next pull is now waiting on the silent pod; only the abort event can end the request.
    const pending = reader.read();
    client.abort(new Error("client disconnected"));
    await waitOnExecutionContext(ctx);
    expect(double.generateCalls[0].aborted()).toBe(true);
    expect(double.cancels).toEqual([{ host: "pod-a.test", requestId: upstreamId(), authorized: true }]);
    expect((await tokensUsed()) - before).toBe(double.generateCalls[0].body.prompt_token_ids.length + 4);
    void pending.catch(() => {});
  });

  // Workerd's other way of losing a client (seen when waitUntil work is pending): no abort
  // event, no cancel; the stream is just never read again. The isolate's next request ends it.
  it("a stream never read again, with no abort event, is ended by the next request after STALLED_STREAM_MS: /v1/cancel, tokens charged", async () => {
    const more = answerIds.slice(4).concat(answerIds, answerIds).slice(0, 20);
    const double = await twoPods({ steps: [{ tokens: answerIds.slice(0, 4) }, ...more.map((id) => ({ tokens: [id], delayMs: 2 })), { hang: true }] }, { throws: "unused" });
    const vars = { STALLED_STREAM_MS: "100" };
    const before = await tokensUsed();
    const first = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream: true }, vars);
    const reader = first.res.body!.getReader();
    await readUntil(reader, fourText);
    // The client reads no more; the stream fills its one-chunk queue and waits.
    await new Promise((r) => setTimeout(r, 300));
    expect(double.cancels).toEqual([]);
    const next = new PodDouble({ "pod-a.test": { steps: tokenSteps(answerIds) }, "pod-b.test": { steps: tokenSteps(answerIds) } });
    const second = await call(next, "/v1/chat/completions", { model: MODEL, messages: userMessages }, vars);
    const body = (await second.res.json()) as any;
    await waitOnExecutionContext(second.ctx);
    expect(next.cancels).toEqual([{ host: "pod-a.test", requestId: first.upstreamId(), authorized: true }]);
    const charged = (await tokensUsed()) - before - 2 * body.usage.prompt_tokens - body.usage.completion_tokens;
    expect(charged).toBeGreaterThanOrEqual(4);
    expect(charged).toBeLessThanOrEqual(24);
    // Once swept, it is not swept (or charged) again.
    const third = await call(next, "/v1/chat/completions", { model: MODEL, messages: userMessages }, vars);
    await third.res.json();
    await waitOnExecutionContext(third.ctx);
    expect(next.cancels).toHaveLength(1);
  });
});

describe("the pod secret", () => {
  it("every call to a pod carries Authorization: Bearer POD_SECRET: the generate and the edge's cancel", async () => {
    const ids = tok.encode("one two STOP three", { parseSpecial: false });
    const double = await twoPods({ steps: [...ids.map((id) => ({ tokens: [id] })), { hang: true }] }, { throws: "unused" });
    const { res, ctx, upstreamId } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stop: ["STOP"] });
    expect(res.status).toBe(200);
    await waitOnExecutionContext(ctx);
    expect(double.generateCalls.map((c) => c.authorized)).toEqual([true]);
    expect(double.cancels).toEqual([{ host: "pod-a.test", requestId: upstreamId(), authorized: true }]);
  });

  it("a pod that refuses the edge's secret (401) is the edge's fault: the other pod answers", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    await registerPod("pod-b", "http://pod-b.test", { running: 8, waiting: 8 });
    const double = new PodDouble({ "pod-a.test": { steps: tokenSteps(answerIds) }, "pod-b.test": { steps: tokenSteps(answerIds) } }, { secrets: { "pod-a.test": "another-deployment" } });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).choices[0].message.content).toBe(ANSWER);
    expect(double.generateCalls.map((c) => [c.host, c.authorized])).toEqual([
      ["pod-a.test", false],
      ["pod-b.test", true],
    ]);
  });

  for (const stream of [false, true]) {
    it(`every pod refuses it (stream ${stream}): a 502 in OpenAI's error shape after one try on each of two pods, no cancel`, async () => {
      await registerPod("pod-c", "http://pod-c.test", { running: 20 });
      const wrong = { "pod-a.test": "x-deployment", "pod-b.test": "x-deployment", "pod-c.test": "x-deployment" };
      await registerPod("pod-a", "http://pod-a.test");
      await registerPod("pod-b", "http://pod-b.test", { running: 8, waiting: 8 });
      const ok = { steps: tokenSteps(answerIds) };
      const double = new PodDouble({ "pod-a.test": ok, "pod-b.test": ok, "pod-c.test": ok }, { secrets: wrong });
      const { res, ctx } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages, stream });
      const e = await expectError(res, 502, null);
      expect(e.type).toBe("server_error");
      expect(e.code).toBe("backend_error");
      expect(e.message).toContain("pod_unauthorized");
      await waitOnExecutionContext(ctx);
      expect(double.generateCalls.map((c) => c.authorized)).toEqual([false, false]);
      expect(double.cancels).toEqual([]);
    });
  }
});

describe("registry", () => {
  it("a pod silent for three heartbeats is not routed to", async () => {
    const stub = env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName("global"));
    const reg = { pod_id: "pod-old", url: "http://pod-old.test", models: [MODEL] as [string], role: "both" as const, block_size: 16, load: { running: 0, waiting: 0, free_blocks: 1, total_blocks: 1 } };
    await stub.upsert(reg, Date.now() - 3 * 2000 - 50);
    const double = new PodDouble({ "pod-old.test": { steps: tokenSteps(answerIds) } });
    const { res } = await call(double, "/v1/chat/completions", { model: MODEL, messages: userMessages });
    // Not the stale pod: the in-Worker runtime is tried (and has no weights in this R2).
    expect((await expectError(res, 503, null)).code).toBe("model_not_installed");
    expect(double.generateCalls).toHaveLength(0);
  });
});
