/**
 * Sparse attention chosen per SLO class at the edge (config ATTENTION_BY_CLASS): the pod request
 * of a class that has settings carries them in `attention`; other classes carry none, so the pod
 * uses its model config. The whole edge runs; a pod double records what the pod was sent.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { KEY, MODEL, registerPod, resetPods, seedTokenizer } from "./helpers";
import { PodDouble, tokenSteps } from "./pod-double";

const BY_CLASS = { batch: { sparse: true, token_budget: 2048, reselect_every: 8 }, interactive: { sparse: false } };

async function send(slo: string) {
  await registerPod("pod-a", "http://pod-a.test");
  const double = new PodDouble({ "pod-a.test": { steps: tokenSteps([42, 43]) } });
  const ctx = createExecutionContext();
  const res = await createApp({ fetch: double.fetch }).fetch(
    new Request("http://edge/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "x-edgeserve-slo": slo },
      body: JSON.stringify({ model: MODEL, prompt: "Once upon a time", max_tokens: 2 }),
    }),
    { ...env, ATTENTION_BY_CLASS: JSON.stringify(BY_CLASS) },
    ctx,
  );
  expect(res.status).toBe(200);
  await res.text();
  await waitOnExecutionContext(ctx);
  expect(double.generateCalls).toHaveLength(1);
  return double.generateCalls[0].body;
}

beforeAll(seedTokenizer);
beforeEach(resetPods);

describe("attention settings per SLO class", () => {
  it("batch work gets the configured Quest settings", async () => {
    const sent = await send("batch");
    expect(sent.slo?.class).toBe("batch");
    expect(sent.attention).toEqual(BY_CLASS.batch);
  });

  it("interactive gets its own (dense) setting; a class without settings sends none", async () => {
    expect((await send("interactive")).attention).toEqual({ sparse: false });
    const deadline = await send("deadline");
    expect(deadline.slo?.class).toBe("deadline");
    expect(deadline.attention).toBeUndefined();
  });
});
