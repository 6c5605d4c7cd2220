import { describe, expect, it } from "vitest";
import { createPolicy, POLICY_NAMES } from "./index";
import { slackMs } from "../slo/slack";
import { estimate } from "./cost";
import { pod, request } from "./fixtures.test-util";
import { routerOptions } from "./options";

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
  it("gives a cache up only for a rescue that holds within the TTFT error it measured", async () => {
    const { EstimateErrorWindow } = await import("./estimate-error");
    const w = new EstimateErrorWindow(4);
    expect(w.quantile(0.75, 1)).toBeUndefined();
    for (const [est, act] of [[100, 110], [100, 50], [100, 300], [100, 100], [100, 120]]) w.observe(est, act);
    // the ring keeps the last 4: errors 0.5, 2, 0, 0.2
    expect(w.count).toBe(4);
    expect(w.quantile(0.75, 4)).toBeCloseTo(0.5);
    expect(w.quantile(1, 4)).toBeCloseTo(2);
    expect(w.quantile(0.75, 5)).toBeUndefined();

    const far = [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b", { prefill_tok_s: 3000 })];
    const prefix = new Map([["a", 60]]);
    const learned = (actualOverEstimate: number) => {
      const p = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock);
      for (let i = 0; i < 16; i++) {
        // ~0.5 s of queue: an estimate the model, not fixed overheads, decides
        // (a fresh pod each time, so the work routed before does not add up)
        const d = p.choose(request(4), [pod(`c${i}`, { waiting_prefill_tokens: 500, waiting: 1 })], new Map())!;
        p.observeTtft!(d, d.ttftMs! * actualOverEstimate);
        // estimates under estimateErrorMinMs (200 ms) teach nothing
        const idle = p.choose(request(4), [pod(`i${i}`)], new Map())!;
        expect(idle.ttftMs!).toBeLessThan(200);
        p.observeTtft!(idle, idle.ttftMs! * 10);
      }
      return p.choose(request(64), far, prefix)!;
    };
    // first tokens as estimated: the 25% floor, and b rescues as in the test below
    expect(learned(1).explain).toContain("rescue pick=b");
    expect(learned(1).explain).toMatch(/err~0\.25$/);
    // first tokens took 2.5x the estimates: a ~2.07 s estimate could be 0.2 s, b's 0.34 s could be 3 s
    const d = learned(2.5);
    expect(d.explain).toContain("affinity-late pick=a");
    expect(d.explain).toMatch(/err~0\.90$/);
  });

  it("stays on the cached prefix when the estimate says late by little, and leaves it only for a sure rescue", () => {
    // a holds 60 of 64 blocks behind 1 s of queue: ttft ~1.07 s at 1000 tok/s against a 1 s TTFT;
    // b is idle with nothing cached: ~1.03 s. Within the estimate's error both might make it: a.
    const prefix = new Map([["a", 60]]);
    const near = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock).choose(
      request(64),
      [pod("a", { waiting_prefill_tokens: 1000, waiting: 1 }), pod("b")],
      prefix,
    )!;
    expect(near.pod.podId).toBe("a");
    expect(near.explain).toContain("affinity-late pick=a");
    // 2 s of queue on a (ttft ~2.07 s: late even if overestimated by 25%), b prefills at 3000 tok/s
    // (~0.34 s: in time even if underestimated by 25%): b rescues the request.
    const far = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock).choose(
      request(64),
      [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b", { prefill_tok_s: 3000 })],
      prefix,
    )!;
    expect(far.pod.podId).toBe("b");
    expect(far.explain).toContain("rescue pick=b");
    // the same, but b is only just in time (~0.9 s, 1.1 s if underestimated): no sure rescue, a
    const unsure = createPolicy("prefix-slo", { prefillTokS: 1000 }, clock).choose(
      request(64),
      [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b", { prefill_tok_s: 1150 })],
      prefix,
    )!;
    expect(unsure.pod.podId).toBe("a");
    // with no estimate error allowed, any pod that meets the SLO by the estimate rescues it
    const exact = createPolicy("prefix-slo", { prefillTokS: 1000, estimateError: 0 }, clock).choose(
      request(64),
      [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b", { prefill_tok_s: 1150 })],
      prefix,
    )!;
    expect(exact.pod.podId).toBe("b");
  });

  it("leaves the cached pod for TPOT only when its decode batch alone is too slow", () => {
    // 100 tok/s of decode: a TPOT of (running + 1) × 10 ms against a 100 ms target.
    const slo = { class: "interactive" as const, ttft_ms: 5000, tpot_ms: 100, expected_output_tokens: 2 };
    const prefix = new Map([["a", 8]]);
    const choose = (running: number) =>
      createPolicy("prefix-slo", {}, clock).choose(request(8, slo), [pod("a", { running }), pod("b")], prefix)!;
    expect(choose(8).explain).toContain("affinity pick=a"); // 90 ms: meets
    expect(choose(10).pod.podId).toBe("a"); // 110 ms, 82 ms if overestimated: may meet, stays
    expect(choose(14).explain).toContain("rescue pick=b"); // 150 ms, 112 ms at best: b (10 ms)
  });

  it("breaks ties in cached prefix by the slack ranking", () => {
    const d = createPolicy("prefix-slo", {}, clock).choose(request(4), [pod("a"), pod("b")], new Map([["b", 2]]));
    expect(d!.pod.podId).toBe("b");
    expect(d!.cachedBlocks).toBe(2);
    expect(d!.explain).toMatch(/class=interactive affinity pick=b cached=2\/4 ttft~\d+ms slack~\d+ms/);
    const e = createPolicy("prefix-slo", {}, clock).choose(
      request(4),
      [pod("a", { waiting_prefill_tokens: 500, waiting: 1 }), pod("b"), pod("c")],
      new Map([["a", 2], ["b", 2]]),
    );
    expect(e!.pod.podId).toBe("b");
  });

  it("with nothing cached, takes a pod that meets the SLO, else the least late, else the least work", () => {
    const slo = { class: "interactive" as const, ttft_ms: 1500, tpot_ms: 100, expected_output_tokens: 4 };
    // a: 1.45 s of queue + 1.03 s prefill (late); b prefills at 3000 tok/s (~0.34 s): meets
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(64, slo),
      [pod("a", { waiting_prefill_tokens: 1450, waiting: 1 }), pod("b", { prefill_tok_s: 3000 })],
      new Map(),
    );
    expect(d!.explain).toContain("meets pick=b");
    // late everywhere by a little (1 s target): the least late, b
    const f = createPolicy("prefix-slo", {}, clock).choose(
      request(64, { ...slo, ttft_ms: 1000 }),
      [pod("a", { waiting_prefill_tokens: 1200, waiting: 1 }), pod("b")],
      new Map(),
    );
    expect(f!.explain).toContain("late pick=b");
    // 3 s of queue everywhere against a 1 s TTFT: hopeless, least work
    const busy = { waiting_prefill_tokens: 3000, waiting: 3 };
    const h = createPolicy("prefix-slo", {}, clock).choose(
      request(64, { ...slo, ttft_ms: 1000 }),
      [pod("a", { ...busy, waiting_prefill_tokens: 3500 }), pod("b", busy)],
      new Map(),
    );
    expect(h!.explain).toContain("hopeless pick=b");
  });

  it("keeps a request that is late everywhere on its cached prefix", () => {
    const busy = { waiting_prefill_tokens: 3000, waiting: 3 };
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(64),
      [pod("a", { ...busy, waiting_prefill_tokens: 3500 }), pod("b", busy)],
      new Map([["a", 60]]),
    );
    expect(d!.pod.podId).toBe("a");
    expect(d!.explain).toContain("affinity-late pick=a");
  });

  it("has at least prefix-aware's cached blocks when that pick meets the SLO, and fewer only for a sure rescue", () => {
    // Pseudo-random clusters: loads, rates and cached prefixes; one fresh pair of policies each.
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    let checked = 0;
    let rescued = 0;
    for (let t = 0; t < 300; t++) {
      const pods = ["a", "b", "c"].map((id) =>
        pod(id, { running: rnd(12), waiting: 1, waiting_prefill_tokens: rnd(3000), prefill_tok_s: 500 + rnd(3000), decode_tok_s: 50 + rnd(200) }),
      );
      const prefix = new Map(pods.map((p) => [p.podId, rnd(3) === 0 ? 0 : rnd(40)]));
      const slo = { class: "interactive" as const, ttft_ms: 500 + rnd(2000), tpot_ms: 50 + rnd(150), expected_output_tokens: 1 + rnd(20) };
      const req = request(40, slo);
      const aware = createPolicy("prefix-aware", {}, clock).choose(req, pods, prefix)!;
      const est = (id: string) => estimate(req, pods.find((p) => p.podId === id)!, prefix, routerOptions(), undefined, 1000);
      const withSlo = createPolicy("prefix-slo", {}, clock).choose(req, pods, prefix)!;
      const scaled = (id: string, f: number) => {
        const e = est(id);
        return slackMs(slo, { ttftMs: e.ttftMs * f, tpotMs: e.tpotMs * f });
      };
      if (scaled(aware.pod.podId, 1) >= 0) {
        checked++;
        expect(withSlo.cachedBlocks).toBeGreaterThanOrEqual(aware.cachedBlocks);
      } else if (withSlo.cachedBlocks < aware.cachedBlocks) {
        // cache given up: only for a sure rescue (late even at 0.75x the estimate, in time at 1.25x)
        rescued++;
        expect(scaled(aware.pod.podId, 0.75)).toBeLessThan(0);
        expect(scaled(withSlo.pod.podId, 1.25)).toBeGreaterThanOrEqual(0);
      }
    }
    expect(checked).toBeGreaterThan(30);
    expect(rescued).toBeGreaterThan(5);
  });

  it("sends batch work to its cached prefix behind a modest queue, elsewhere behind a long one", () => {
    const batch = request(64, { class: "batch", expected_output_tokens: 20 });
    const prefix = new Map([["a", 60]]);
    const d = createPolicy("prefix-slo", {}, clock).choose(batch, [pod("a", { waiting_prefill_tokens: 2000, waiting: 2 }), pod("b")], prefix);
    expect(d!.pod.podId).toBe("a");
    // 6 s of queue (past the 5 s affinity limit): a costs 69 ms + 0.25 × 6 s, b 1.03 s of prefill
    const e = createPolicy("prefix-slo", {}, clock).choose(
      batch,
      [pod("a", { waiting_prefill_tokens: 6000, waiting: 6 }), pod("b")],
      prefix,
    );
    expect(e!.pod.podId).toBe("b");
    expect(e!.explain).toContain("least-work pick=b");
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

  it("takes a decoding pod's measured step time as its time per token, plus one token's cost per request joining", async () => {
    const { estimate } = await import("./cost");
    const { routerOptions } = await import("./options");
    const { InflightTracker } = await import("./inflight");
    const opts = routerOptions();
    const req = request(10);
    // 3 running at 100 tok/s would say 40 ms; the pod measures 240 ms steps (prefill riding along)
    const p = pod("p", { running: 3, decode_tok_s: 100, decode_step_ms: 240 });
    expect(estimate(req, p, new Map(), opts, undefined, 0).tpotMs).toBeCloseTo(240 + 10);
    const inflight = new InflightTracker();
    inflight.record("p", 100, 0);
    inflight.record("p", 100, 0);
    expect(estimate(req, p, new Map(), opts, inflight, 0).tpotMs).toBeCloseTo(240 + 3 * 10);
    // an idle pod's last step time says nothing about a batch that is not there: the rate decides
    const idle = pod("i", { running: 0, decode_tok_s: 100, decode_step_ms: 240 });
    expect(estimate(req, idle, new Map(), opts, undefined, 0).tpotMs).toBeCloseTo(10);
    // the cached pod's measured steps are far past the TPOT target, another pod's are not: rescue
    const slo = { class: "interactive" as const, ttft_ms: 5000, tpot_ms: 100, expected_output_tokens: 4 };
    const d = createPolicy("prefix-slo", {}, clock).choose(
      request(8, slo),
      [pod("a", { running: 2, decode_step_ms: 400 }), pod("b", { running: 2, decode_step_ms: 40 })],
      new Map([["a", 8]]),
    )!;
    expect(d.explain).toContain("rescue pick=b");
    // the same rates without step times: both meet by the rate (30 ms), the cache stays
    const e = createPolicy("prefix-slo", {}, clock).choose(request(8, slo), [pod("a", { running: 2 }), pod("b", { running: 2 })], new Map([["a", 8]]))!;
    expect(e.explain).toContain("affinity pick=a");
  });
});
