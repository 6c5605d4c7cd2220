import { describe, expect, it } from "vitest";
import cases from "../../../shared/vectors/protocol/cases.json";
import { checkStreamRecord, StreamRecord } from "./stream-record";

type Case = { def: string; name: string; valid: boolean; message: Record<string, unknown> };
const vectors = (cases.cases as Case[]).filter((c) => c.def === "StreamRecord");

describe("StreamRecord zod schema vs the shared protocol vectors", () => {
  it("has vectors to check, valid and invalid", () => {
    expect(vectors.some((c) => c.valid)).toBe(true);
    expect(vectors.some((c) => !c.valid)).toBe(true);
  });
  for (const c of vectors) {
    it(`${c.name} → ${c.valid ? "valid" : "invalid"}`, () => {
      expect(StreamRecord.safeParse(c.message).success).toBe(c.valid);
      // checkStreamRecord, for the request the vector's record names, agrees.
      const id = typeof c.message.request_id === "string" ? c.message.request_id : "r";
      const checked = checkStreamRecord(c.message, id);
      expect(typeof checked === "string" ? "refused" : "accepted", String(checked)).toBe(c.valid ? "accepted" : "refused");
    });
  }
});

describe("checkStreamRecord", () => {
  const tokens = { type: "tokens", request_id: "req-1", token_ids: [5, 6], t_ms: [1, 2] };
  it("refuses a record for another request, and accepts an error record whose id is null", () => {
    expect(checkStreamRecord(tokens, "req-1")).toEqual(tokens);
    expect(checkStreamRecord(tokens, "req-2")).toMatch(/for request "req-1", expected "req-2"/);
    const err = { type: "error", request_id: null, error: { code: "overloaded", message: "busy" } };
    expect(checkStreamRecord(err, "req-2")).toEqual(err);
  });
  it("refuses what the schema refuses: a code outside its list, t_ms of another length, extra fields, no request_id", () => {
    expect(checkStreamRecord({ type: "error", request_id: "req-1", error: { code: "oops", message: "x" } }, "req-1")).toMatch(/error record breaks the protocol at error.code/);
    expect(checkStreamRecord({ ...tokens, t_ms: [1] }, "req-1")).toMatch(/at t_ms: t_ms must have one entry per token id/);
    expect(checkStreamRecord({ ...tokens, t_ms: [1, -2] }, "req-1")).toMatch(/at t_ms.1/);
    expect(checkStreamRecord({ ...tokens, logprobs: [] }, "req-1")).toMatch(/Unrecognized key/);
    const { request_id: _, ...noId } = tokens;
    expect(checkStreamRecord(noId, "req-1")).toMatch(/at request_id/);
    expect(checkStreamRecord({ type: "final", request_id: "req-1", finish_reason: "stop", usage: { prompt_tokens: 1, completion_tokens: 1.5, cached_tokens: 0 } }, "req-1")).toMatch(/usage.completion_tokens/);
    expect(checkStreamRecord([tokens], "req-1")).toBe("stream record is not an object");
    expect(checkStreamRecord({ type: "toString" }, "req-1")).toMatch(/unknown stream record type "toString"/);
  });
});
