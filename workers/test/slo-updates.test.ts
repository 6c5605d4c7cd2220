/**
 * The whole edge against a pod double: while a long answer streams back, the edge refines its
 * output-length estimate and sends POST /v1/slo_update to the pod that decodes (rate-limited);
 * finished lengths go to the shared OutputLengths object, so a later request starts from them.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { outputLengthsStub } from "../src/durable/output-estimator";
import { KEY, MODEL, POD_SECRET, registerPod, resetPods, seedTokenizer } from "./helpers";
import { PodDouble, tokenSteps } from "./pod-double";

beforeAll(seedTokenizer);
beforeEach(resetPods);

function withSloUpdates(double: PodDouble) {
  const updates: { host: string; body: { request_id: string; expected_output_tokens?: number }; authorization: string | null }[] = [];
  const f = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = new Request(input as RequestInfo, init);
    const url = new URL(req.url);
    if (url.pathname === "/v1/slo_update") {
      const body = (await req.json()) as { request_id: string };
      updates.push({ host: url.host, body, authorization: req.headers.get("authorization") });
      return Response.json({ request_id: body.request_id, updated: true });
    }
    return double.fetch(input, init);
  }) as typeof fetch;
  return { updates, f };
}

async function complete(f: typeof fetch, maxTokens: number) {
  const app = createApp({ fetch: f });
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request("http://edge/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "Count slowly.", max_tokens: maxTokens, stream: true }),
    }),
    env,
    ctx,
  );
  expect(res.status).toBe(200);
  await res.text();
  await waitOnExecutionContext(ctx);
}

describe("slack updates mid-generation", () => {
  it("sends refined estimates to the decoding pod a few times, not per token", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { steps: tokenSteps(Array.from({ length: 400 }, (_, i) => 100 + i), "length") } });
    const { updates, f } = withSloUpdates(double);
    await complete(f, 1000);
    const sent = double.generateCalls[0].body;
    // no history for this key yet: the prior (256) goes with the request
    expect(sent.slo?.expected_output_tokens).toBe(256);
    expect(updates.length).toBeGreaterThanOrEqual(1);
    expect(updates.length).toBeLessThanOrEqual(5);
    for (const u of updates) {
      expect(u.host).toBe("pod-a.test");
      expect(u.authorization).toBe(`Bearer ${POD_SECRET}`);
      expect(u.body.request_id).toBe(sent.request_id);
    }
    const ests = updates.map((u) => u.body.expected_output_tokens!);
    expect(ests[0]).toBeGreaterThan(256 * 1.25 - 1);
    expect([...ests].sort((a, b) => a - b)).toEqual(ests);
  });

  it("shares finished lengths across isolates through the OutputLengths object", async () => {
    await registerPod("pod-a", "http://pod-a.test");
    const double = new PodDouble({ "pod-a.test": { steps: tokenSteps([5, 6, 7, 8, 9, 10, 11], "length") } });
    await complete(withSloUpdates(double).f, 7);
    // The object holds the 7-token answer (another isolate would read it from there).
    const ring = await outputLengthsStub(env.OUTPUT_LENGTHS, "test-main", MODEL).samples();
    expect(ring).toContain(7);
  });
});
