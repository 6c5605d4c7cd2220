import { describe, expect, it } from "vitest";
import { classify, offersTools, type ClassifyInput } from "./classify";
import { sloConfig } from "./config";

const cfg = sloConfig();
const base: ClassifyInput = { stream: false, hasTools: false, maxTokens: 256, estimatedOutputTokens: 100, nowMs: 1_000_000 };

describe("classify", () => {
  it("uses the request's shape when nothing else is given", () => {
    expect(classify({ ...base, stream: true }, cfg).targets.class).toBe("interactive");
    expect(classify({ ...base, stream: true, hasTools: true }, cfg).targets.class).toBe("deadline");
    expect(classify({ ...base, maxTokens: 4096 }, cfg).targets.class).toBe("batch");
    expect(classify(base, cfg).targets.class).toBe("deadline");
    expect(classify({ ...base, hint: { deadline_at: 1_003_000 } }, cfg).targets).toMatchObject({ class: "compound", deadline_ms: 3000 });
    expect(classify({ ...base, stream: true }, cfg).source).toBe("shape");
  });

  it("puts the hint above the key's defaults, and the key above the shape", () => {
    const keyDefaults = { class: "batch" as const, priority: 2 };
    const byKey = classify({ ...base, stream: true, keyDefaults }, cfg);
    expect(byKey).toMatchObject({ source: "key", targets: { class: "batch", priority: 2 } });
    const byHint = classify({ ...base, stream: true, keyDefaults, hint: { class: "interactive", ttft_ms: 300 } }, cfg);
    expect(byHint.source).toBe("hint");
    // class and ttft from the hint, priority still from the key
    expect(byHint.targets).toMatchObject({ class: "interactive", ttft_ms: 300, tpot_ms: 100, priority: 2 });
  });

  it("fills per-class targets from the config and the output estimate", () => {
    const i = classify({ ...base, stream: true }, cfg).targets;
    expect(i).toEqual({ class: "interactive", ttft_ms: 1000, tpot_ms: 100, expected_output_tokens: 100, priority: 7 });
    const d = classify(base, cfg).targets;
    expect(d.deadline_ms).toBe(2000 + 60 * 100);
    expect(d.tpot_ms).toBeUndefined();
    const b = classify({ ...base, maxTokens: 4096 }, cfg).targets;
    expect(b.ttft_ms).toBeUndefined();
    expect(b.priority).toBeLessThan(d.priority!);
  });

  it("caps the estimate at max_tokens and keeps a late compound step urgent", () => {
    expect(classify({ ...base, maxTokens: 10 }, cfg).targets.expected_output_tokens).toBe(10);
    const late = classify({ ...base, hint: { class: "compound", deadline_at: base.nowMs - 5000 } }, cfg);
    expect(late.targets.deadline_ms).toBe(1);
  });
  it("treats offered tools as deadline-shaped unless tool_choice is none", () => {
    const fn = { type: "function", function: { name: "lookup" } };
    const shape = (f: Parameters<typeof offersTools>[0]) => classify({ ...base, stream: true, hasTools: offersTools(f) }, cfg).targets.class;
    expect(shape({ tools: [fn] })).toBe("deadline");
    expect(shape({ tools: [fn], tool_choice: "required" })).toBe("deadline");
    expect(shape({ tools: [fn], tool_choice: { type: "function", function: { name: "lookup" } } })).toBe("deadline");
    expect(shape({ functions: [fn.function], function_call: "auto" })).toBe("deadline");
    expect(shape({ tools: [fn], tool_choice: "none" })).toBe("interactive");
    expect(shape({ tools: [], tool_choice: "auto" })).toBe("interactive");
    expect(shape({})).toBe("interactive");
    // a parent deadline still makes it a compound step
    expect(classify({ ...base, hasTools: offersTools({ tools: [fn] }), hint: { deadline_at: base.nowMs + 4000 } }, cfg).targets.class).toBe("compound");
  });
});
