import { ApiError } from "../errors";
import { describe, expect, it } from "vitest";
import { mergeHints, parseSloBody, parseSloHeader } from "./hint";

describe("SLO hints", () => {
  it("parses a bare class and key=value pairs", () => {
    expect(parseSloHeader("interactive")).toEqual({ class: "interactive" });
    expect(parseSloHeader("class=deadline; deadline_ms=8000, priority=3")).toEqual({ class: "deadline", deadline_ms: 8000, priority: 3 });
    expect(parseSloHeader(null)).toBeUndefined();
    expect(parseSloHeader("  ")).toBeUndefined();
  });

  it("reads the body extension and lets the header win field by field", () => {
    const body = parseSloBody({ model: "m", edgeserve_slo: { class: "batch", ttft_ms: 9000 } });
    expect(body).toEqual({ class: "batch", ttft_ms: 9000 });
    expect(parseSloBody({ model: "m" })).toBeUndefined();
    expect(mergeHints(body, parseSloHeader("interactive"))).toEqual({ class: "interactive", ttft_ms: 9000 });
  });

  it.each([
    ["urgent", "class"],
    ["class=interactive; ttft_ms=fast", "ttft_ms"],
    ["ttft_ms=-5", "ttft_ms"],
    ["colour=blue", "colour"],
    ["interactive; batch", "after a class"],
    ["priority=12", "priority"],
  ])("rejects header %j with a 400 naming %s", (value, needle) => {
    try {
      parseSloHeader(value);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ApiError);
      expect((e as ApiError).status).toBe(400);
      expect((e as ApiError).message).toContain(needle);
      expect((e as ApiError).param).toBe("x-edgeserve-slo");
    }
  });

  it("rejects a malformed body extension", () => {
    expect(() => parseSloBody({ edgeserve_slo: "interactive" })).toThrow(ApiError);
    expect(() => parseSloBody({ edgeserve_slo: { class: "interactive", extra: 1 } })).toThrow(/extra|Unrecognized/);
    expect(() => parseSloHeader("x".repeat(600))).toThrow(/512/);
  });
});
