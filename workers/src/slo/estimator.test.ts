import { describe, expect, it } from "vitest";
import { OutputLengthEstimator } from "./estimator";

describe("OutputLengthEstimator", () => {
  it("starts from the prior, learns per (key, model), and caps at max_tokens", () => {
    const est = new OutputLengthEstimator({ priorOutputTokens: 200, samples: 8, keys: 100 });
    expect(est.estimate("k", "m", 4096)).toBe(200);
    for (const n of [10, 12, 14, 16, 18]) est.observe("k", "m", n);
    expect(est.estimate("k", "m", 4096)).toBe(14);
    expect(est.estimate("k", "other-model", 4096)).toBe(200);
    expect(est.estimate("k", "m", 11)).toBe(11);
  });

  it("refines as generation goes: conditional median, then growth", () => {
    const est = new OutputLengthEstimator({ priorOutputTokens: 50, samples: 16, keys: 10 });
    for (const n of [20, 20, 20, 300, 400]) est.observe("k", "m", n);
    expect(est.estimate("k", "m", 1000, 0)).toBe(20);
    // having produced 25 tokens, the 20-token requests are ruled out
    expect(est.estimate("k", "m", 1000, 25)).toBe(400);
    // past every sample: growth rule, always more than what was generated
    expect(est.estimate("k", "m", 1000, 500)).toBe(750);
    expect(est.estimate("k", "m", 501, 500)).toBe(501);
  });

  it("keeps a bounded ring per key and a bounded number of keys", () => {
    const est = new OutputLengthEstimator({ priorOutputTokens: 50, samples: 4, keys: 2 });
    for (const n of [1, 2, 3, 4, 100, 100, 100, 100]) est.observe("a", "m", n);
    expect(est.count("a", "m")).toBe(4);
    expect(est.estimate("a", "m", 1000)).toBe(100);
    est.observe("b", "m", 5);
    est.observe("c", "m", 5);
    expect(est.count("a", "m")).toBe(0);
    expect(est.count("c", "m")).toBe(1);
    est.observe("c", "m", 0);
    expect(est.count("c", "m")).toBe(1);
  });
});
