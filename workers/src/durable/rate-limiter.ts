/**
 * Per-API-key limits: requests per minute and tokens per minute over a sliding 60 s window.
 * One object per key (`idFromName(keyName)`); each admitted request and each charge is a row in
 * SQLite, so the window survives restarts. Prompt tokens are charged at admission, completion
 * tokens when the answer ends (so one in-flight answer can overshoot the token budget).
 */
import { DurableObject } from "cloudflare:workers";

export const WINDOW_MS = 60_000;

export interface Limits {
  rpm: number;
  tpm: number;
}

export type Admission =
  | { ok: true; remainingRequests: number; remainingTokens: number }
  | { ok: false; limit: "requests" | "tokens"; retryAfterS: number; message: string };

interface Row {
  ts: number;
  requests: number;
  tokens: number;
}

export class RateLimiter extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS usage (ts INTEGER NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL)`,
    );
    ctx.storage.sql.exec(`CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)`);
  }

  /** Admits one request that brings `promptTokens`, or says when to come back. */
  admit(limits: Limits, promptTokens: number, nowMs: number = Date.now()): Admission {
    const rows = this.window(nowMs);
    const requests = rows.reduce((s, r) => s + r.requests, 0);
    const tokens = rows.reduce((s, r) => s + r.tokens, 0);
    const refused = refusal(rows, nowMs, limits, requests, tokens, promptTokens);
    if (refused) return refused;
    this.ctx.storage.sql.exec(`INSERT INTO usage (ts, requests, tokens) VALUES (?, 1, ?)`, nowMs, promptTokens);
    return { ok: true, remainingRequests: limits.rpm - requests - 1, remainingTokens: limits.tpm - tokens - promptTokens };
  }

  /**
   * Whether a request could be admitted now, before its prompt is tokenized: the refusal `admit`
   * would give to the smallest prompt (one token), or ok. Records nothing; `admit` still decides.
   */
  check(limits: Limits, nowMs: number = Date.now()): Admission {
    const rows = this.window(nowMs);
    const requests = rows.reduce((s, r) => s + r.requests, 0);
    const tokens = rows.reduce((s, r) => s + r.tokens, 0);
    return (
      refusal(rows, nowMs, limits, requests, tokens, 1) ?? {
        ok: true,
        remainingRequests: limits.rpm - requests,
        remainingTokens: limits.tpm - tokens,
      }
    );
  }

  /** Charges tokens produced after admission (completion tokens). */
  charge(tokens: number, nowMs: number = Date.now()): void {
    if (!Number.isInteger(tokens) || tokens <= 0) return;
    this.ctx.storage.sql.exec(`INSERT INTO usage (ts, requests, tokens) VALUES (?, 0, ?)`, nowMs, tokens);
  }

  /** Requests and tokens counted in the window ending at `nowMs`. */
  usage(nowMs: number = Date.now()): { requests: number; tokens: number } {
    const rows = this.window(nowMs);
    return { requests: rows.reduce((s, r) => s + r.requests, 0), tokens: rows.reduce((s, r) => s + r.tokens, 0) };
  }

  private window(nowMs: number): Row[] {
    this.ctx.storage.sql.exec(`DELETE FROM usage WHERE ts <= ?`, nowMs - WINDOW_MS);
    return this.ctx.storage.sql.exec<Row & Record<string, SqlStorageValue>>(`SELECT ts, requests, tokens FROM usage ORDER BY ts`).toArray();
  }
}

/** Why a request bringing `promptTokens` cannot be admitted now, or undefined when it can. */
function refusal(rows: Row[], nowMs: number, limits: Limits, requests: number, tokens: number, promptTokens: number): Admission | undefined {
  if (requests + 1 > limits.rpm) {
    return {
      ok: false,
      limit: "requests",
      retryAfterS: retryAfter(rows, nowMs, (r) => r.requests, requests + 1 - limits.rpm),
      message: `Rate limit reached for requests: limit ${limits.rpm}/min, used ${requests}.`,
    };
  }
  if (promptTokens > limits.tpm) {
    return {
      ok: false,
      limit: "tokens",
      retryAfterS: WINDOW_MS / 1000,
      message: `Request too large: ${promptTokens} prompt tokens exceed the limit of ${limits.tpm} tokens/min.`,
    };
  }
  if (tokens + promptTokens > limits.tpm) {
    return {
      ok: false,
      limit: "tokens",
      retryAfterS: retryAfter(rows, nowMs, (r) => r.tokens, tokens + promptTokens - limits.tpm),
      message: `Rate limit reached for tokens: limit ${limits.tpm}/min, used ${tokens}, requested ${promptTokens}.`,
    };
  }
  return undefined;
}

/** Whole seconds until enough of the oldest rows leave the window to free `excess` units. */
function retryAfter(rows: Row[], nowMs: number, units: (r: Row) => number, excess: number): number {
  let freed = 0;
  for (const r of rows) {
    freed += units(r);
    if (freed >= excess) return Math.max(1, Math.ceil((r.ts + WINDOW_MS - nowMs) / 1000));
  }
  return WINDOW_MS / 1000;
}
