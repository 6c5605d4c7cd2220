import { describe, expect, it } from "vitest";
import { defaultLockLimits, Mutex, QueueFullError, WaitTimeoutError, type LockLimits } from "./mutex";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const limits = (l: Partial<LockLimits>): LockLimits => ({ ...defaultLockLimits, ...l });

describe("Mutex (the WASM runtime's lock)", () => {
  it("grants in FIFO order; a stale lease's release does not free the next holder", async () => {
    const m = new Mutex();
    const a = await m.acquire(undefined);
    const order: string[] = [];
    const b = m.acquire(undefined).then((l) => (order.push("b"), l));
    const c = m.acquire(undefined).then((l) => (order.push("c"), l));
    expect(m.queued).toBe(2);
    a.release();
    const lb = await b;
    a.release(); // idempotent: must not end b's turn
    expect(lb.held).toBe(true);
    expect(m.queued).toBe(1);
    lb.release();
    (await c).release();
    expect(order).toEqual(["b", "c"]);
    expect(m.locked).toBe(false);
  });

  it("the holder's abort signal ends its lease and the next waiter runs", async () => {
    const m = new Mutex();
    const ctl = new AbortController();
    const a = await m.acquire(ctl.signal);
    const b = m.acquire(undefined);
    ctl.abort(new Error("client disconnected"));
    expect(a.held).toBe(false);
    expect((await b).held).toBe(true);
  });

  it("a waiter whose signal aborts leaves the queue", async () => {
    const m = new Mutex();
    const a = await m.acquire(undefined);
    const ctl = new AbortController();
    const b = m.acquire(ctl.signal);
    const c = m.acquire(undefined);
    ctl.abort(new Error("gone"));
    await expect(b).rejects.toThrow("gone");
    expect(m.queued).toBe(1);
    a.release();
    expect((await c).held).toBe(true);
  });

  it("refuses a waiter beyond maxQueue at once", async () => {
    const m = new Mutex();
    const l = limits({ maxQueue: 1 });
    const a = await m.acquire(undefined, l);
    const b = m.acquire(undefined, l);
    await expect(m.acquire(undefined, l)).rejects.toBeInstanceOf(QueueFullError);
    a.release();
    expect((await b).held).toBe(true);
  });

  it("a waiter gives up after maxWaitMs", async () => {
    const m = new Mutex();
    const l = limits({ maxWaitMs: 30 });
    await m.acquire(undefined, l);
    await expect(m.acquire(undefined, l)).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(m.queued).toBe(0);
  });

  it("a holder that never runs again is revoked after maxHoldMs by a waiter", async () => {
    const m = new Mutex();
    const l = limits({ maxHoldMs: 40, maxIdleMs: 60_000 });
    const a = await m.acquire(undefined, l);
    // Nothing ever calls a.release() (its request is gone): b still gets the lock.
    const b = await m.acquire(undefined, l);
    expect(b.held).toBe(true);
    expect(a.held).toBe(false);
    expect(a.revokedFor).toBe("hold");
  });

  it("an idle holder is revoked only when someone waits", async () => {
    const m = new Mutex();
    const l = limits({ maxIdleMs: 30 });
    const a = await m.acquire(undefined, l);
    await sleep(60);
    expect(a.held).toBe(true); // nobody waits: idle is harmless
    a.touch();
    const b = m.acquire(undefined, l);
    const lb = await b;
    expect(a.revokedFor).toBe("idle");
    expect(lb.held).toBe(true);
  });

  it("a holder that keeps touching its lease is not revoked for idleness", async () => {
    const m = new Mutex();
    const l = limits({ maxIdleMs: 80, maxWaitMs: 5000 });
    const a = await m.acquire(undefined, l);
    const b = m.acquire(undefined, l);
    for (let i = 0; i < 10; i++) {
      await sleep(20);
      a.touch();
    }
    expect(a.held).toBe(true);
    a.release();
    expect((await b).held).toBe(true);
  });
});
