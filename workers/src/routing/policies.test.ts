import { describe, expect, it } from "vitest";
import { createPolicy, POLICY_NAMES } from "./index";
import { pod, request } from "./fixtures.test-util";

const clock = () => 1000;

describe.each(POLICY_NAMES)("every policy: %s", (name) => {
  it("returns null when no pod serves the model, and never picks a prefill-only pod", () => {
    const p = createPolicy(name, {}, clock);
    expect(p.name).toBe(name);
    expect(p.choose(request(4), [pod("a", {}, "both", ["other"])], new Map())).toBeNull();
    for (let i = 0; i < 4; i++) {
      const d = p.choose(request(1), [pod("pre", {}, "prefill"), pod("b")], new Map());
      expect(d?.pod.podId).toBe("b");
    }
  });

  it("lists every other eligible pod as a fallback and explains itself", () => {
    const d = createPolicy(name, {}, clock).choose(request(4), [pod("a"), pod("b"), pod("c")], new Map([["b", 2]]));
    expect(d).not.toBeNull();
    expect(new Set([d!.pod, ...d!.fallbacks].map((x) => x.podId))).toEqual(new Set(["a", "b", "c"]));
    expect(d!.explain.startsWith(name)).toBe(true);
    expect(d!.explain).toContain(d!.pod.podId);
    expect(d!.explain).not.toMatch(/\n/);
  });
});

describe("round-robin", () => {
  it("cycles in pod-id order", () => {
    const p = createPolicy("round-robin");
    const pods = [pod("c"), pod("a"), pod("b")];
    const picks = Array.from({ length: 6 }, () => p.choose(request(1), pods, new Map())!.pod.podId);
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c"]);
  });
});

describe("least-loaded", () => {
  it("picks the pod with the least queued work, ignoring the cache", () => {
    const d = createPolicy("least-loaded", {}, clock).choose(
      request(8),
      [pod("busy", { waiting: 3, waiting_prefill_tokens: 3000 }), pod("idle")],
      new Map([["busy", 8]]),
    );
    expect(d!.pod.podId).toBe("idle");
  });

  it("spreads a burst that arrives between two heartbeats", () => {
    const p = createPolicy("least-loaded", {}, clock);
    const pods = [pod("a"), pod("b"), pod("c")];
    const picks = new Set(Array.from({ length: 3 }, () => p.choose(request(8), pods, new Map())!.pod.podId));
    expect(picks.size).toBe(3);
  });
});

describe("prefix-aware", () => {
  it("follows the longest cached prefix, and leaves it when that pod is overloaded", () => {
    const p = createPolicy("prefix-aware", { maxQueueMsForAffinity: 2000 }, clock);
    const prefix = new Map([["a", 2], ["b", 6]]);
    expect(p.choose(request(8), [pod("a"), pod("b"), pod("c")], prefix)!.pod.podId).toBe("b");
    const hot = [pod("a"), pod("b", { waiting: 5, waiting_prefill_tokens: 5000 }), pod("c")];
    const d = createPolicy("prefix-aware", { maxQueueMsForAffinity: 2000 }, clock).choose(request(8), hot, prefix)!;
    expect(d.pod.podId).not.toBe("b");
    expect(d.explain).toContain("overloaded");
  });

  it("skips a pod without free KV for the request", () => {
    const d = createPolicy("prefix-aware", {}, clock).choose(request(8), [pod("a", { free_blocks: 1 }), pod("b")], new Map([["a", 8]]));
    expect(d!.pod.podId).toBe("b");
  });
});

describe("prefix-slo", () => {
  it("trades cache hits against queueing in milliseconds", () => {
    // a holds 60 of 64 blocks but has 1 s of prefill queued; b is idle with nothing cached.
    // At 1000 tok/s: a ≈ 1000 + 69 ms, b ≈ 1029 ms: neither meets the 1 s TTFT, b is less late.
    // With a 0.3 s queue a meets it and starts first.
    const p = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock);
    const prefix = new Map([["a", 60]]);
    expect(p.choose(request(64), [pod("a", { waiting_prefill_tokens: 1000, waiting: 1 }), pod("b")], prefix)!.pod.podId).toBe("b");
    const q = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock);
    expect(q.choose(request(64), [pod("a", { waiting_prefill_tokens: 300, waiting: 1 }), pod("b")], prefix)!.pod.podId).toBe("a");
  });

  it("breaks near-ties in slack by cached prefix", () => {
    const d = createPolicy("prefix-slo", {}, clock).choose(request(4), [pod("a"), pod("b")], new Map([["b", 2]]));
    expect(d!.pod.podId).toBe("b");
    expect(d!.cachedBlocks).toBe(2);
    expect(d!.explain).toMatch(/class=interactive meets pick=b cached=2\/4 ttft~\d+ms slack~\d+ms/);
  });

  it("among pods that meet the SLO, takes the one that adds least work", () => {
    // a holds 60/64 blocks behind 0.3 s of queue (ttft ~0.37 s); b is idle, nothing cached (ttft ~1.03 s).
    // With a 5 s TTFT target both meet it: a, which saves computing 960 prompt tokens again.
    const slo = { class: "interactive" as const, ttft_ms: 5000, tpot_ms: 100, expected_output_tokens: 4 };
    const pods = [pod("a", { waiting_prefill_tokens: 300, waiting: 1 }), pod("b")];
    const d = createPolicy("prefix-slo", {}, clock).choose(request(64, slo), pods, new Map([["a", 60]]));
    expect(d!.pod.podId).toBe("a");
    expect(d!.explain).toContain("meets pick=a");
    // a cached pod that misses the 1.5 s target (1.45 s of queue + its tail) loses to an idle one that meets it
    const tight = { ...slo, ttft_ms: 1500 };
    const e = createPolicy("prefix-slo", {}, clock).choose(
      request(64, tight),
      [pod("a", { waiting_prefill_tokens: 1450, waiting: 1 }), pod("b", { prefill_tok_s: 3000 })],
      new Map([["a", 60]]),
    );
    expect(e!.pod.podId).toBe("b");
  });

  it("prefers a cached prefix over an earlier first token while both meet the target", () => {
    // TTFT 1.28 s. a: 60/64 cached behind 1.2 s of queue (ttft ~1.27 s, adds 69 ms of prefill);
    // b: idle, nothing cached (ttft ~1.03 s, adds 1.03 s for whoever comes next). Both meet it: a.
    const slo = { class: "interactive" as const, ttft_ms: 1280, expected_output_tokens: 1 };
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(64, slo),
      [pod("a", { waiting_prefill_tokens: 1200, waiting: 1 }), pod("b")],
      new Map([["a", 60]]),
    );
    expect(d!.explain).toContain("meets pick=a");
    // with a 1.25 s target a would be late and b is not: b
    const e = createPolicy("prefix-slo", {}, clock).choose(
      request(64, { ...slo, ttft_ms: 1250 }),
      [pod("a", { waiting_prefill_tokens: 1200, waiting: 1 }), pod("b")],
      new Map([["a", 60]]),
    );
    expect(e!.pod.podId).toBe("b");
    // late everywhere by a little (1 s target): the least late, b
    const f = createPolicy("prefix-slo", {}, clock).choose(
      request(64, { ...slo, ttft_ms: 1000 }),
      [pod("a", { waiting_prefill_tokens: 1200, waiting: 1 }), pod("b")],
      new Map([["a", 60]]),
    );
    expect(f!.explain).toContain("late pick=b");
  });

  it("routes a request that is late everywhere like batch work: to its cached prefix", () => {
    // 3 s of queue on every pod against a 1 s TTFT: hopeless; a holds the prefix, so it costs least there.
    const busy = { waiting_prefill_tokens: 3000, waiting: 3 };
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(64),
      [pod("a", { ...busy, waiting_prefill_tokens: 3500 }), pod("b", busy)],
      new Map([["a", 60]]),
    );
    expect(d!.pod.podId).toBe("a");
    expect(d!.explain).toContain("hopeless pick=a");
  });

  it("sends batch work where it costs least even behind a modest queue", () => {
    const batch = request(64, { class: "batch", expected_output_tokens: 20 });
    const prefix = new Map([["a", 60]]);
    const d = createPolicy("prefix-slo", {}, clock).choose(batch, [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b")], prefix);
    expect(d!.pod.podId).toBe("a");
  });

  it("plans prefill → decode for a long uncached prompt when prefill pods exist", () => {
    const pods = [pod("pre", {}, "prefill"), pod("dec1", { running: 4 }, "decode"), pod("dec2", {}, "decode")];
    const d = createPolicy("prefix-slo", { disaggMinUncachedTokens: 256 }, clock).choose(request(64), pods, new Map());
    expect(d!.prefillPod?.podId).toBe("pre");
    expect(d!.pod.podId).toBe("dec2");
    expect(d!.explain).toContain("disagg prefill=pre");
    // a short prompt stays colocated, on a pod that can decode
    const short = createPolicy("prefix-slo", { disaggMinUncachedTokens: 256 }, clock).choose(request(4), pods, new Map());
    expect(short!.prefillPod).toBeUndefined();
    expect(short!.pod.role).toBe("decode");
    // disaggregation off, or no prefill pods: colocated
    const off = createPolicy("prefix-slo", { disaggMinUncachedTokens: 256, disaggregation: "off" }, clock).choose(request(64), pods, new Map());
    expect(off!.prefillPod).toBeUndefined();
  });
});

describe("createPolicy", () => {
  it("defaults to prefix-slo and rejects unknown names and bad options", () => {
    expect(createPolicy(undefined).name).toBe("prefix-slo");
    expect(() => createPolicy("random")).toThrow(/round-robin, least-loaded, prefix-aware, prefix-slo; got "random"/);
    expect(() => createPolicy("prefix-slo", { prefillTokS: -1 })).toThrow(/prefillTokS/);
  });
});

describe("cost model rates", () => {
  it("believes a pod's reported (busy-time) rates, and uses the defaults only for a pod that reports none", async () => {
    const { estimate } = await import("./cost");
    const { routerOptions } = await import("./options");
    const opts = routerOptions({ prefillTokS: 2000, decodeTokS: 200 });
    const req = request(10); // 165 prompt tokens, nothing cached
    const slow = estimate(req, pod("slow", { prefill_tok_s: 500, decode_tok_s: 50 }), new Map(), opts, undefined, 0);
    expect(slow.ttftMs).toBeCloseTo((1000 * 165) / 500);
    expect(slow.tpotMs).toBeCloseTo(1000 / 50);
    // the decode batch is what runs (3) plus this request; the 10 queued prompts are in queueMs instead
    const queued = estimate(req, pod("q", { running: 3, waiting: 10, waiting_prefill_tokens: 5000, decode_tok_s: 100 }), new Map(), opts, undefined, 0);
    expect(queued.tpotMs).toBeCloseTo((1000 * 4) / 100);
    expect(queued.queueMs).toBeCloseTo((1000 * 5000) / 1000);
    const fresh = estimate(req, pod("fresh", { prefill_tok_s: 0, decode_tok_s: 0 }), new Map(), opts, undefined, 0);
    expect(fresh.ttftMs).toBeCloseTo((1000 * 165) / 2000);
    // prefix-slo sends an interactive request to the pod that can meet its TTFT, not to the slow one
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(60, { class: "interactive", ttft_ms: 1000, tpot_ms: 100, expected_output_tokens: 4 }),
      [pod("a", { prefill_tok_s: 500 }), pod("b", { prefill_tok_s: 3000 })],
      new Map(),
    );
    expect(d?.pod.podId).toBe("b");
  });
});
