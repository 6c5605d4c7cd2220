/**
 * OutputLengths: the finished output lengths of one (API key, model), shared by every isolate
 * (slo/shared-estimator.ts reads and feeds it). One object per (key, model), SQLite-backed: a
 * ring of the last `samples` lengths, which survives restarts.
 *
 * The read path stays cheap: isolates cache the samples and refresh them every few seconds in the
 * background; only an isolate's first request for a (key, model) waits for this object.
 */
import { DurableObject } from "cloudflare:workers";

/** Samples kept per (key, model) at most. */
export const MAX_SAMPLES = 4096;

export function outputLengthsStub(
  ns: DurableObjectNamespace<OutputLengths>,
  apiKey: string,
  model: string,
): DurableObjectStub<OutputLengths> {
  return ns.get(ns.idFromName(`lengths:${apiKey}\u0000${model}`));
}

export class OutputLengths extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS ring (slot INTEGER PRIMARY KEY, len INTEGER NOT NULL)`);
    ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`);
  }

  /** Records finished output lengths (tokens) into a ring of `samples`; returns the ring after it. */
  observe(lengths: number[], samples: number): number[] {
    if (!Number.isInteger(samples) || samples < 1 || samples > MAX_SAMPLES) {
      throw new RangeError(`samples must be an integer in [1, ${MAX_SAMPLES}], got ${samples}`);
    }
    const sql = this.ctx.storage.sql;
    this.ctx.storage.transactionSync(() => {
      let next = sql.exec<{ v: number }>(`SELECT v FROM meta WHERE k = 'next'`).toArray()[0]?.v ?? 0;
      for (const n of lengths) {
        if (!Number.isInteger(n) || n < 1) continue;
        sql.exec(`INSERT OR REPLACE INTO ring (slot, len) VALUES (?, ?)`, next % samples, n);
        next = (next + 1) % samples;
      }
      sql.exec(`DELETE FROM ring WHERE slot >= ?`, samples); // the ring was shrunk
      sql.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES ('next', ?)`, next);
    });
    return this.samples();
  }

  /** The remembered lengths (ring order, not time order). */
  samples(): number[] {
    return this.ctx.storage.sql.exec<{ len: number }>(`SELECT len FROM ring ORDER BY slot`).toArray().map((r) => r.len);
  }
}
