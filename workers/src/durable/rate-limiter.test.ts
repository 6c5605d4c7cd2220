import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { RateLimiter, WINDOW_MS } from "./rate-limiter";

let n = 0;
const fresh = () => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(`rl-test-${++n}`));

describe("RateLimiter", () => {
  it("admits up to rpm requests in a window, then says when one slot frees", async () => {
    await runInDurableObject(fresh(), (rl: RateLimiter) => {
      const t0 = 1_000_000;
      expect(rl.admit({ rpm: 2, tpm: 1000 }, 10, t0).ok).toBe(true);
      expect(rl.admit({ rpm: 2, tpm: 1000 }, 10, t0 + 10_000).ok).toBe(true);
      const denied = rl.admit({ rpm: 2, tpm: 1000 }, 10, t0 + 20_000);
      expect(denied).toMatchObject({ ok: false, limit: "requests", retryAfterS: 40 });
      // The first request leaves the window at t0 + 60 s.
      expect(rl.admit({ rpm: 2, tpm: 1000 }, 10, t0 + WINDOW_MS + 1).ok).toBe(true);
    });
  });

  it("counts prompt tokens at admission and completion tokens when charged", async () => {
    await runInDurableObject(fresh(), (rl: RateLimiter) => {
      const t0 = 5_000_000;
      expect(rl.admit({ rpm: 100, tpm: 100 }, 60, t0).ok).toBe(true);
      rl.charge(30, t0 + 1000);
      expect(rl.usage(t0 + 2000)).toEqual({ requests: 1, tokens: 90 });
      const denied = rl.admit({ rpm: 100, tpm: 100 }, 20, t0 + 2000);
      expect(denied).toMatchObject({ ok: false, limit: "tokens", retryAfterS: 58 });
      expect(rl.admit({ rpm: 100, tpm: 100 }, 10, t0 + 2000).ok).toBe(true);
    });
  });

  it("refuses a prompt larger than the whole budget", async () => {
    await runInDurableObject(fresh(), (rl: RateLimiter) => {
      expect(rl.admit({ rpm: 10, tpm: 50 }, 51, 0)).toMatchObject({ ok: false, limit: "tokens" });
    });
  });

  it("keeps its window across a restart (SQLite)", async () => {
    const stub = fresh();
    const now = Date.now();
    expect((await stub.admit({ rpm: 1, tpm: 100 }, 1, now)).ok).toBe(true);
    await runInDurableObject(stub, (rl: RateLimiter) => {
      expect(rl.usage(now + 1)).toEqual({ requests: 1, tokens: 1 });
    });
  });
});
