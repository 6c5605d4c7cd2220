/**
 * Streamed answers whose client may be gone without the edge being told. Workerd at times (seen
 * when the request still has waitUntil work pending) fires no abort event and no stream cancel
 * for a client that leaves: the stream is just never read again, and the request's own code
 * gets no chance to clean up (at times its context is gone: no timer of it fires again). So
 * every open stream is listed here with the time of its last read and a heartbeat; each new
 * request of the isolate sweeps the list, and a stream unread, or without a heartbeat, for
 * `stalledMs` is ended from the sweeping request: pod cancel and token charge, with that request's own env,
 * fetch and waitUntil (a request may not do I/O through another request's objects).
 */

export interface SweepContext {
  env: Env;
  fetch: typeof fetch;
  waitUntil: (p: Promise<unknown>) => void;
}

export interface OpenAnswer {
  /** Date.now() when the last chunk the client asked for was queued (+Infinity while one is being made). */
  lastReadMs: number;
  /**
   * Date.now() of the answer's own last heartbeat (a timer in its request): a request workerd
   * dropped runs no timers, and its read in progress never ends.
   */
  aliveMs: number;
  /** Ends the answer's upstream work and bookkeeping through `ctx`; called at most once. */
  sweep(ctx: SweepContext): void;
}

/** Default for the STALLED_STREAM_MS var: a client that reads nothing for this long is gone. */
export const DEFAULT_STALLED_STREAM_MS = 30_000;

const open = new Set<OpenAnswer>();

/** How often a tracked answer's request proves it still runs. */
export const HEARTBEAT_MS = 1000;

/** Lists an answer and starts its heartbeat; the returned function takes it off (it ended). */
export function track(answer: OpenAnswer): () => void {
  open.add(answer);
  const beat = setInterval(() => {
    // Swept by another request (which cannot clear this request's timer): stop here.
    if (!open.has(answer)) clearInterval(beat);
    else answer.aliveMs = Date.now();
  }, HEARTBEAT_MS);
  return () => {
    clearInterval(beat);
    open.delete(answer);
  };
}

/** Ends every listed answer unread for `stalledMs`. Returns how many it ended. */
export function sweepStalled(ctx: SweepContext, stalledMs: number, nowMs = Date.now()): number {
  let n = 0;
  for (const a of open) {
    if (nowMs - a.lastReadMs < stalledMs && nowMs - a.aliveMs < stalledMs) continue;
    open.delete(a);
    n++;
    try {
      a.sweep(ctx);
    } catch (e) {
      console.warn(`sweeping a stalled stream failed: ${(e as Error).message}`);
    }
  }
  return n;
}

/** STALLED_STREAM_MS from the Worker's vars (a positive integer), else the default. */
export function stalledStreamMs(env: Env): number {
  const v = (env as unknown as Partial<Record<string, unknown>>).STALLED_STREAM_MS;
  const n = Number(v);
  return typeof v === "string" && Number.isInteger(n) && n > 0 ? n : DEFAULT_STALLED_STREAM_MS;
}
