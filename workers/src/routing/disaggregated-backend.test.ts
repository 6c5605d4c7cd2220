import { describe, expect, it } from "vitest";
import type { BackendEvent, GenerateParams, InferenceBackend } from "../backends/types";
import { DisaggregatedBackend, transferId } from "./disaggregated-backend";

/** A backend double that records its calls and replays fixed events. */
class Scripted implements InferenceBackend {
  calls: GenerateParams[] = [];
  constructor(readonly id: string, private readonly events: BackendEvent[], private readonly delayMs = 0) {}
  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    this.calls.push(p);
    for (const ev of this.events) {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      yield ev;
    }
  }
}

const params: GenerateParams = {
  requestId: "req-1", model: "m", promptTokenIds: [1, 2, 3], maxTokens: 4, temperature: 0, topP: 1, topK: 0,
  stopTokenIds: [], signal: new AbortController().signal,
};
const usage = { promptTokens: 3, completionTokens: 2, cachedTokens: 0 };

describe("DisaggregatedBackend", () => {
  it("starts the prefill side and streams the decode side's output", async () => {
    const prefill = new Scripted("pod:pre", [{ type: "final", finishReason: "length", usage: { ...usage, completionTokens: 0 } }], 5);
    const decode = new Scripted("pod:dec", [{ type: "tokens", tokenIds: [7, 8] }, { type: "final", finishReason: "stop", usage }]);
    const background: Promise<unknown>[] = [];
    let prefillLast: BackendEvent | undefined;
    const b = new DisaggregatedBackend({ prefill, decode, waitUntil: (p) => background.push(p), onPrefillDone: (ev) => (prefillLast = ev) });
    expect(b.id).toBe("pod:pre>pod:dec");
    const out: BackendEvent[] = [];
    for await (const ev of b.generate(params)) out.push(ev);
    expect(out).toEqual([{ type: "tokens", tokenIds: [7, 8] }, { type: "final", finishReason: "stop", usage }]);
    expect(prefill.calls).toHaveLength(1);
    expect(decode.calls[0]).toBe(params);
    await Promise.all(background);
    expect(prefillLast).toMatchObject({ type: "final", finishReason: "length" });
  });

  it("still answers from the decode side when the prefill side fails", async () => {
    const prefill = new Scripted("pod:pre", [{ type: "error", code: "kv_transfer_failed", message: "peer gone", retryable: true }]);
    const decode = new Scripted("pod:dec", [{ type: "tokens", tokenIds: [9] }, { type: "final", finishReason: "stop", usage }]);
    let prefillLast: BackendEvent | undefined;
    const out: BackendEvent[] = [];
    for await (const ev of new DisaggregatedBackend({ prefill, decode, onPrefillDone: (ev) => (prefillLast = ev) }).generate(params)) out.push(ev);
    expect(out.map((e) => e.type)).toEqual(["tokens", "final"]);
    await new Promise((r) => setTimeout(r, 0));
    expect(prefillLast?.type).toBe("error");
  });

  it("derives a protocol-valid transfer id", () => {
    expect(transferId("req-abc")).toBe("kv-req-abc");
    expect(transferId("x".repeat(200))).toHaveLength(128);
  });
});
