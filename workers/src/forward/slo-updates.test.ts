import { describe, expect, it } from "vitest";
import type { BackendEvent, GenerateParams, InferenceBackend } from "../backends/types";
import { OutputLengthEstimator } from "../slo/estimator";
import { SloUpdater, SloUpdatingBackend } from "./slo-updates";

/** A backend that yields `n` tokens one per event, then a final. */
function tokens(n: number): InferenceBackend {
  return {
    id: "pod:x",
    async *generate(): AsyncGenerator<BackendEvent> {
      for (let i = 0; i < n; i++) yield { type: "tokens", tokenIds: [i] };
      yield { type: "final", finishReason: "length", usage: { promptTokens: 3, completionTokens: n, cachedTokens: 0 } };
    },
  };
}

function recorder() {
  const calls: { url: string; body: unknown; authorization: string | null }[] = [];
  const f = (async (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(input), body: JSON.parse(String(init?.body)), authorization: new Headers(init?.headers).get("authorization") });
    return Response.json({ updated: true });
  }) as typeof fetch;
  return { calls, f };
}

const params = (maxTokens: number): GenerateParams => ({
  requestId: "req-1",
  model: "m",
  promptTokenIds: [1, 2, 3],
  maxTokens,
  temperature: 0,
  topP: 1,
  topK: 0,
  stopTokenIds: [],
  signal: new AbortController().signal,
});

describe("slack updates to the pod", () => {
  it("sends the refined estimate when it moves, not per token, and passes every event through", async () => {
    // History: most answers are 20 tokens, some 300-400. At arrival the estimate is the median (20);
    // once 21 tokens are out the short ones are ruled out and the estimate jumps to 400.
    const est = new OutputLengthEstimator({ priorOutputTokens: 50, samples: 16, keys: 10 });
    for (const n of [20, 20, 20, 300, 400]) est.observe("k", "m", n);
    const initial = est.estimate("k", "m", 1000, 0);
    expect(initial).toBe(20);
    const { calls, f } = recorder();
    const pending: Promise<unknown>[] = [];
    const backend = new SloUpdatingBackend(tokens(120), {
      podUrl: "http://pod-a.test",
      secret: "test-pod-secret",
      slo: { class: "deadline", deadline_ms: 9000, expected_output_tokens: initial },
      estimate: (g) => est.estimate("k", "m", 1000, g),
      fetch: f,
      waitUntil: (p) => pending.push(p),
    });
    const seen: BackendEvent[] = [];
    for await (const ev of backend.generate(params(1000))) seen.push(ev);
    await Promise.all(pending);
    expect(seen.filter((e) => e.type === "tokens")).toHaveLength(120);
    expect(seen.at(-1)?.type).toBe("final");
    expect(calls).toEqual([
      { url: "http://pod-a.test/v1/slo_update", body: { request_id: "req-1", expected_output_tokens: 400 }, authorization: "Bearer test-pod-secret" },
    ]);
  });

  it("without history follows the growth rule, rate-limited by the relative change and a token gap", () => {
    const sent: number[] = [];
    const u = new SloUpdater("r", {
      podUrl: "http://p",
      secret: "test-pod-secret",
      slo: { class: "interactive", expected_output_tokens: 256 },
      estimate: (g) => Math.max(256, Math.ceil(1.5 * g)),
      fetch: (async (_: unknown, init?: RequestInit) => {
        sent.push(JSON.parse(String(init?.body)).expected_output_tokens);
        return new Response(null);
      }) as typeof fetch,
    });
    for (let g = 1; g <= 600; g++) u.onProgress(g);
    // ceil(1.5g) reaches 1.25 * 256 = 320 at g = 213; each later update is >= 25% above the one before.
    expect(sent[0]).toBe(320);
    for (let i = 1; i < sent.length; i++) expect(sent[i] / sent[i - 1]).toBeGreaterThanOrEqual(1.25);
    expect(sent.length).toBeLessThanOrEqual(5);
    expect(u.sent.map((b) => b.expected_output_tokens)).toEqual(sent);
  });

  it("stops after maxUpdates and sends nothing while the estimate holds", () => {
    let n = 0;
    const f = (async () => {
      n++;
      return new Response(null);
    }) as typeof fetch;
    const steady = new SloUpdater("r", { podUrl: "http://p", secret: "test-pod-secret", slo: { class: "batch", expected_output_tokens: 50 }, estimate: () => 55, fetch: f });
    for (let g = 1; g < 50; g++) steady.onProgress(g);
    expect(n).toBe(0);
    const capped = new SloUpdater("r", {
      podUrl: "http://p",
      secret: "test-pod-secret",
      slo: { class: "batch", expected_output_tokens: 1 },
      estimate: (g) => 2 * g + 2,
      fetch: f,
      policy: { minRelChange: 0.25, minTokens: 1, maxUpdates: 3 },
    });
    for (let g = 1; g < 1000; g++) capped.onProgress(g);
    expect(capped.sent).toHaveLength(3);
  });
});
