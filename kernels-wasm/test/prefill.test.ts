/**
 * Model.prefill (batched) against Model.forward token by token on SmolLM2-135M: the last
 * token's logits and the next decode step's logits are bit-identical, with a prompt longer than
 * one batch, and with a small StreamingLLM window that wraps inside the prompt.
 */
import { describe, expect, it } from "vitest";
import { loadModel } from "../src/runtime/index";
import { MODEL_PATH, requireModel } from "./model-file";
import { fileSource, nodeKernels } from "./node-runtime";

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length).slice();

describe("prefill = forward token by token", () => {
  it.each([
    ["36 tokens, batch 16, no wrap", { sinkTokens: 4, windowTokens: 60, prefillBatch: 16 }, 36],
    ["45 tokens, batch 8, window wraps inside the prompt", { sinkTokens: 2, windowTokens: 19, prefillBatch: 8 }, 45],
  ] as const)("%s", async (_, opts, n) => {
    requireModel();
    const kern = await nodeKernels("simd128");
    const batched = await loadModel(fileSource(MODEL_PATH), kern, opts);
    const stepwise = await loadModel(fileSource(MODEL_PATH), await nodeKernels("simd128"), { ...opts, prefillBatch: 1 });
    const V = batched.cfg.vocabSize;
    const prompt = Array.from({ length: n }, (_, i) => (17 + 7919 * i) % V);
    const a = bits(batched.prefill(prompt, 0));
    let b!: Uint32Array;
    for (let p = 0; p < n; p++) b = bits(stepwise.forward(prompt[p], p));
    expect(a.length).toBe(V);
    expect(a.findIndex((v, i) => v !== b[i])).toBe(-1);
    // the KV caches agree too: the next decode step gives the same logits
    const t = batched.greedy();
    expect(stepwise.greedy()).toBe(t);
    const a2 = bits(batched.forward(t, n)), b2 = bits(stepwise.forward(t, n));
    expect(a2.findIndex((v, i) => v !== b2[i])).toBe(-1);
  }, 60_000);
});
