/**
 * The whole edge against a pod double: the first token of each request goes back to the routing
 * policy (prefix-slo learns how wrong its TTFT estimates are; the route header shows the error it
 * now allows for a rescue, `err~`).
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { KEY, MODEL, registerPod, resetPods, seedTokenizer } from "./helpers";
import { PodDouble, tokenSteps } from "./pod-double";

beforeAll(seedTokenizer);
beforeEach(resetPods);

async function route(f: typeof fetch): Promise<string> {
  // a heartbeat, so the pod stays live through the test
  await registerPod("pod-a", "http://pod-a.test", { waiting: 1 });
  const app = createApp({ fetch: f });
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request("http://edge/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "Count slowly.", max_tokens: 2, stream: true }),
    }),
    env,
    ctx,
  );
  expect(res.status).toBe(200);
  await res.text();
  await waitOnExecutionContext(ctx);
  return res.headers.get("x-edgeserve-route") ?? "";
}

describe("TTFT feedback to the router", () => {
  it("prefix-slo measures its TTFT error from the first tokens the edge sees", async () => {
    // One queued request on the pod: the cost model says ~0.26 s to the first token (512 assumed
    // prompt tokens at the default 2000 tok/s, plus this short prompt).
    const asEstimated = new PodDouble({ "pod-a.test": { steps: tokenSteps([100, 101], "length", 265) } });
    let header = "";
    for (let i = 0; i < 17; i++) header = await route(asEstimated.fetch);
    expect(header).toContain("prefix-slo");
    expect(header).toMatch(/err~0\.25/); // within 25%: the floor stands
    // The same estimates, but first tokens now come at once: off by ~100%
    const instant = new PodDouble({ "pod-a.test": { steps: tokenSteps([100, 101], "length", 0) } });
    for (let i = 0; i < 20; i++) header = await route(instant.fetch);
    expect(header).toMatch(/err~0\.9/);
  });
});
