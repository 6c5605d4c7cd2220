import { describe, expect, it } from "vitest";
import { metSlo, slackMs } from "./slack";

describe("slack", () => {
  it("is the tightest of the targets present", () => {
    const t = { class: "interactive" as const, ttft_ms: 1000, tpot_ms: 100, expected_output_tokens: 11 };
    expect(slackMs(t, { ttftMs: 400, tpotMs: 50 })).toBe(500);
    expect(slackMs(t, { ttftMs: 400, tpotMs: 90 })).toBe(100);
    expect(slackMs({ class: "deadline", deadline_ms: 5000, expected_output_tokens: 11 }, { ttftMs: 1000, tpotMs: 200 })).toBe(2000);
    expect(slackMs({ class: "batch" }, { ttftMs: 1e6, tpotMs: 1e3 })).toBe(Infinity);
  });

  it("judges a finished request against its targets", () => {
    const t = { class: "interactive" as const, ttft_ms: 1000, tpot_ms: 100 };
    expect(metSlo(t, 900, 900 + 9 * 100, 10)).toBe(true);
    expect(metSlo(t, 1100, 1200, 2)).toBe(false);
    expect(metSlo(t, 900, 900 + 9 * 150, 10)).toBe(false);
    expect(metSlo({ class: "deadline", deadline_ms: 3000 }, 100, 3001, 5)).toBe(false);
  });
});
