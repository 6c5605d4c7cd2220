/**
 * The WASM runtime's lock: one holder at a time, FIFO waiters, and a bound on each way it could
 * wedge the isolate. In workerd a request whose client leaves never runs its pending
 * continuations (no `finally`), and at times (seen in local workerd) not even its abort
 * listeners, so nothing here relies on the holder's code running again:
 * - the holder's lease is released by its request's abort signal (listener registered here);
 * - a lease held longer than `maxHoldMs` is revoked (checked by the holder at every token, and
 *   by the waiters' own timers, so a holder that never runs again cannot block them);
 * - a lease whose holder did not `touch` it for `maxIdleMs` (no token made: its request is gone,
 *   or its client stopped reading) is revoked as soon as another request waits;
 * - at most `maxQueue` requests wait (the next one is refused: QueueFullError), each at most
 *   `maxWaitMs` (WaitTimeoutError).
 */
export interface LockLimits {
  maxQueue: number;
  maxWaitMs: number;
  maxHoldMs: number;
  maxIdleMs: number;
}

// maxIdleMs: a token takes ~30-100 ms and a prefill batch of 16 ~0.2-0.6 s in workerd, so 2 s
// without one means the holder's request is gone (a disconnect workerd did not report) or its
// client does not read; it was 10 s, which every next request waited after such a drop (A4).
export const defaultLockLimits: LockLimits = { maxQueue: 8, maxWaitMs: 60_000, maxHoldMs: 120_000, maxIdleMs: 2_000 };

export class QueueFullError extends Error {
  constructor(readonly max: number) {
    super(`${max} requests are already waiting for the in-Worker runtime`);
  }
}

export class WaitTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`the in-Worker runtime stayed busy for ${ms} ms`);
  }
}

/** One turn with the lock. `release` is idempotent; after it (or a revoke) `held` is false. */
export class Lease {
  readonly grantedAt = Date.now();
  private lastTouch = this.grantedAt;
  private state: "held" | "released" | "revoked" = "held";
  /** Why the lease was taken away, once it was. */
  revokedFor: "hold" | "idle" | null = null;

  constructor(
    readonly limits: LockLimits,
    private readonly onEnd: () => void,
  ) {}

  get held(): boolean {
    return this.state === "held";
  }

  get overdue(): boolean {
    return Date.now() - this.grantedAt >= this.limits.maxHoldMs;
  }

  get idle(): boolean {
    return Date.now() - this.lastTouch >= this.limits.maxIdleMs;
  }

  /** The holder made progress (a token): it is not idle. */
  touch(): void {
    this.lastTouch = Date.now();
  }

  release(): void {
    this.end("released");
  }

  revoke(why: "hold" | "idle"): void {
    if (this.state === "held") this.revokedFor = why;
    this.end("revoked");
  }

  private end(state: "released" | "revoked"): void {
    if (this.state !== "held") return;
    this.state = state;
    this.onEnd();
  }
}

/** A queued acquire; `lease` is set when its turn comes. */
interface Waiter {
  signal: AbortSignal | undefined;
  limits: LockLimits;
  lease: Lease | null;
}

/**
 * How often a waiter looks whether its turn came. A waiter resolves its own promise from its own
 * timer: in workerd a promise resolved from another request's context (the holder's release)
 * may run its continuation only at the waiter's next event, seconds later.
 */
const POLL_MS = 10;

export class Mutex {
  private holder: Lease | null = null;
  private readonly waiters: Waiter[] = [];

  get queued(): number {
    return this.waiters.length;
  }

  get locked(): boolean {
    return this.holder !== null;
  }

  /**
   * Resolves to a lease once every earlier waiter had its turn. Rejects with the signal's reason
   * if it aborts first, QueueFullError at once when `maxQueue` already wait, WaitTimeoutError
   * after `maxWaitMs`. The lease ends by itself when `signal` aborts.
   */
  acquire(signal: AbortSignal | undefined, limits: LockLimits = defaultLockLimits): Promise<Lease> {
    if (signal?.aborted) return Promise.reject(reasonOf(signal));
    this.expireOverdue(true);
    if (!this.holder && this.waiters.length === 0) return Promise.resolve(this.grant(signal, limits));
    if (this.waiters.length >= limits.maxQueue) return Promise.reject(new QueueFullError(limits.maxQueue));
    const waiter: Waiter = { signal, limits, lease: null };
    this.waiters.push(waiter);
    return new Promise<Lease>((resolve, reject) => {
      const since = Date.now();
      let timer: ReturnType<typeof setTimeout> | null = null;
      const leave = (e: unknown) => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        clearTimeout(timer);
        reject(e);
      };
      // After the turn came, the lease's own listener handles an abort.
      const onAbort = () => {
        if (!waiter.lease) leave(reasonOf(signal!));
      };
      const tick = () => {
        // A holder whose request never runs again (client gone without an abort) is revoked here.
        if (!waiter.lease) this.expireOverdue(true);
        if (waiter.lease) {
          signal?.removeEventListener("abort", onAbort);
          resolve(waiter.lease);
        } else if (Date.now() - since >= limits.maxWaitMs) {
          signal?.removeEventListener("abort", onAbort);
          leave(new WaitTimeoutError(limits.maxWaitMs));
        } else {
          timer = setTimeout(tick, POLL_MS);
        }
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      timer = setTimeout(tick, POLL_MS);
    });
  }

  private grant(signal: AbortSignal | undefined, limits: LockLimits): Lease {
    const onAbort = () => lease.release();
    const lease: Lease = new Lease(limits, () => {
      signal?.removeEventListener("abort", onAbort);
      if (this.holder !== lease) return;
      this.holder = null;
      const next = this.waiters.shift();
      if (next) next.lease = this.grant(next.signal, next.limits);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    this.holder = lease;
    return lease;
  }

  /** Revokes the holder's lease when overdue, or idle while `someoneWaits`. */
  private expireOverdue(someoneWaits: boolean): void {
    const h = this.holder;
    if (h?.overdue) h.revoke("hold");
    else if (h && someoneWaits && h.idle) h.revoke("idle");
  }
}

function reasonOf(signal: AbortSignal): unknown {
  return signal.reason ?? new Error("aborted");
}
