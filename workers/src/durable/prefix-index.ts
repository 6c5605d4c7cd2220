/**
 * PrefixIndex: which pod holds the KV of which prompt prefix, by block hash
 * (shared/spec/block-hash.md). Per model, `PREFIX_INDEX_SHARDS` objects, a chain's shard chosen by
 * its first block hash (`shardOf`; routing/prefix-lookup.ts and routing/kv-events.ts pick it), so
 * one hot model is not one object. SQLite-backed: survives restarts and evictions of the object.
 *
 * Two sources, one table:
 *   - precise: the pods' KV events (stored / evicted / cleared), applied in `seq` order per pod;
 *   - approximate: `recordRoute` notes what the router just sent where, for the seconds before the
 *     pod's own events arrive (or for pods whose events lag). Such rows expire after
 *     `approxTtlMs` unless a stored event confirms them.
 * A gap in a pod's `seq` means lost events (maybe evictions): its rows are demoted to approximate,
 * so they age out unless confirmed again. Every row has a TTL, and the table is bounded
 * (`maxEntries`, least recently touched dropped first).
 *
 * Because hash i names the whole prefix up to block i, a pod's match is the longest run
 * h[0..k) that it holds without a hole (an evicted middle block breaks reuse beyond it).
 */
import { DurableObject } from "cloudflare:workers";
import type { KvEventBatch } from "@edgeserve/shared";

export interface PrefixIndexOptions {
  /** Lifetime of a row confirmed by a stored event; refreshed by each new stored event. */
  preciseTtlMs: number;
  /** Lifetime of a row only known from routing. */
  approxTtlMs: number;
  /** Rows kept at most; the least recently touched go first. */
  maxEntries: number;
  /** How often the alarm sweeps expired rows. */
  sweepMs: number;
}

export const defaultPrefixIndexOptions: PrefixIndexOptions = {
  preciseTtlMs: 60 * 60_000,
  approxTtlMs: 60_000,
  maxEntries: 500_000,
  sweepMs: 60_000,
};

export interface ApplyResult {
  /** false when the batch was a duplicate or older than one already applied. */
  applied: boolean;
  /** A batch (or more) before this one was never seen. */
  gap: boolean;
}

export interface PrefixIndexStats {
  entries: number;
  precise: number;
  pods: { podId: string; seq: number; entries: number }[];
}

const HASH = /^[0-9a-f]{32}$/;
/** SQLite in Durable Objects binds at most 100 parameters per statement. */
const CHUNK = 90;

/** Shards per model at most (PREFIX_INDEX_SHARDS). */
export const MAX_SHARDS = 64;

/**
 * Which of a model's `shards` holds the chain that starts with block hash `root` (the prompt's
 * first block, or a KV event's `root_hash`). Every hash of a chain names its first block too
 * (shared/spec/block-hash.md), so one prompt's lookups and its blocks' events meet in one shard,
 * and prompts with different first blocks (system prompts, documents) spread over the shards.
 */
export function shardOf(root: string, shards: number): number {
  if (shards <= 1) return 0;
  return Number.parseInt(root.slice(0, 8), 16) % shards;
}

/** The index shard of a model (shard 0 keeps the unsharded name). */
export function prefixIndexStub(ns: DurableObjectNamespace<PrefixIndex>, model: string, shard = 0): DurableObjectStub<PrefixIndex> {
  return ns.get(ns.idFromName(shard === 0 ? `prefix:${model}` : `prefix:${model}#${shard}`));
}

export class PrefixIndex extends DurableObject<Env> {
  private opts: PrefixIndexOptions = { ...defaultPrefixIndexOptions };
  private writesSinceTrim = 0;
  /** Tests move time by replacing this. */
  now: () => number = () => Date.now();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      const sql = ctx.storage.sql;
      sql.exec(`CREATE TABLE IF NOT EXISTS entries (
        hash TEXT NOT NULL, pod TEXT NOT NULL, precise INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL, touched_ms INTEGER NOT NULL,
        PRIMARY KEY (hash, pod)) WITHOUT ROWID`);
      sql.exec(`CREATE INDEX IF NOT EXISTS entries_pod ON entries (pod)`);
      sql.exec(`CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_ms)`);
      sql.exec(`CREATE INDEX IF NOT EXISTS entries_touched ON entries (touched_ms)`);
      sql.exec(`CREATE TABLE IF NOT EXISTS pods (pod TEXT PRIMARY KEY, seq INTEGER NOT NULL)`);
      sql.exec(`CREATE TABLE IF NOT EXISTS options (k TEXT PRIMARY KEY, v TEXT NOT NULL)`);
      const saved = sql.exec<{ v: string }>(`SELECT v FROM options WHERE k = 'options'`).toArray()[0];
      if (saved) this.opts = { ...defaultPrefixIndexOptions, ...JSON.parse(saved.v) };
    });
  }

  /** Replaces the options (persisted with the index). */
  async configure(options: Partial<PrefixIndexOptions>): Promise<PrefixIndexOptions> {
    const next = { ...this.opts, ...options };
    for (const [k, v] of Object.entries(next)) {
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`PrefixIndex option ${k} must be a positive number, got ${v}`);
    }
    this.opts = next;
    this.ctx.storage.sql.exec(`INSERT OR REPLACE INTO options (k, v) VALUES ('options', ?)`, JSON.stringify(next));
    return next;
  }

  /**
   * Applies one pod's KV event batch (POST /internal/kv-events). Batches of a pod must come in `seq`
   * order. `lost`: the batch's events were dropped (routing/kv-events.ts bounds a batch's work), so
   * its seq counts as seen but its events as missed, like a gap: the pod's rows are demoted.
   */
  async applyEvents(batch: KvEventBatch, opts: { lost?: boolean } = {}): Promise<ApplyResult> {
    const sql = this.ctx.storage.sql;
    const nowMs = this.now();
    const pod = batch.pod_id;
    for (const ev of batch.events) {
      for (const h of ev.block_hashes) {
        if (!HASH.test(h)) throw new TypeError(`block hash must be 32 lowercase hex digits, got "${String(h).slice(0, 40)}"`);
      }
    }
    const last = sql.exec<{ seq: number }>(`SELECT seq FROM pods WHERE pod = ?`, pod).toArray()[0];
    if (last && batch.seq <= last.seq) return { applied: false, gap: false };
    const gap = opts.lost === true || (last !== undefined && batch.seq > last.seq + 1);
    this.ctx.storage.transactionSync(() => {
      if (gap) {
        // Missed events may have been evictions: stop trusting this pod's rows beyond a short TTL.
        sql.exec(`UPDATE entries SET precise = 0, expires_ms = MIN(expires_ms, ?) WHERE pod = ?`, nowMs + this.opts.approxTtlMs, pod);
      }
      const expires = nowMs + this.opts.preciseTtlMs;
      for (const ev of opts.lost ? [] : batch.events) {
        if (ev.type === "cleared") {
          sql.exec(`DELETE FROM entries WHERE pod = ?`, pod);
        } else if (ev.type === "stored") {
          for (const h of ev.block_hashes) {
            sql.exec(
              `INSERT INTO entries (hash, pod, precise, expires_ms, touched_ms) VALUES (?, ?, 1, ?, ?)
               ON CONFLICT (hash, pod) DO UPDATE SET precise = 1, expires_ms = excluded.expires_ms, touched_ms = excluded.touched_ms`,
              h, pod, expires, nowMs,
            );
          }
          this.writesSinceTrim += ev.block_hashes.length;
        } else {
          for (const h of ev.block_hashes) sql.exec(`DELETE FROM entries WHERE hash = ? AND pod = ?`, h, pod);
        }
      }
      sql.exec(`INSERT OR REPLACE INTO pods (pod, seq) VALUES (?, ?)`, pod, batch.seq);
    });
    await this.afterWrite(nowMs);
    return { applied: true, gap };
  }

  /** Approximate mode: the router sent a prompt with these block hashes to `podId`. */
  async recordRoute(podId: string, hashes: string[]): Promise<void> {
    const sql = this.ctx.storage.sql;
    const nowMs = this.now();
    const expires = nowMs + this.opts.approxTtlMs;
    this.ctx.storage.transactionSync(() => {
      for (const h of hashes) {
        if (!HASH.test(h)) throw new TypeError(`block hash must be 32 lowercase hex digits, got "${String(h).slice(0, 40)}"`);
        // A precise row keeps its longer TTL; an approximate one is refreshed.
        sql.exec(
          `INSERT INTO entries (hash, pod, precise, expires_ms, touched_ms) VALUES (?, ?, 0, ?, ?)
           ON CONFLICT (hash, pod) DO UPDATE SET touched_ms = excluded.touched_ms,
             expires_ms = MAX(entries.expires_ms, excluded.expires_ms)`,
          h, podId, expires, nowMs,
        );
      }
    });
    this.writesSinceTrim += hashes.length;
    await this.afterWrite(nowMs);
  }

  /**
   * Longest cached prefix, in blocks, per pod for a prompt's hash chain (pods with none are absent).
   * `preciseOnly` ignores routing-only rows.
   */
  async match(hashes: string[], preciseOnly = false): Promise<Record<string, number>> {
    const sql = this.ctx.storage.sql;
    const nowMs = this.now();
    const runs = new Map<string, number>();
    let alive: Set<string> | undefined;
    for (let start = 0; start < hashes.length; start += CHUNK) {
      const chunk = hashes.slice(start, start + CHUNK);
      const holders = new Map<string, Set<string>>();
      const rows = sql.exec<{ hash: string; pod: string }>(
        `SELECT hash, pod FROM entries WHERE expires_ms > ? ${preciseOnly ? "AND precise = 1" : ""}
         AND hash IN (${chunk.map(() => "?").join(",")})`,
        nowMs, ...chunk,
      );
      for (const r of rows) {
        let s = holders.get(r.hash);
        if (!s) holders.set(r.hash, (s = new Set()));
        s.add(r.pod);
      }
      for (let i = 0; i < chunk.length; i++) {
        const here = holders.get(chunk[i]) ?? new Set<string>();
        alive = alive === undefined ? here : new Set([...alive].filter((p) => here.has(p)));
        if (alive.size === 0) return Object.fromEntries(runs);
        for (const p of alive) runs.set(p, start + i + 1);
      }
    }
    return Object.fromEntries(runs);
  }

  /** Forgets a pod (it left the registry). */
  async dropPod(podId: string): Promise<void> {
    this.ctx.storage.sql.exec(`DELETE FROM entries WHERE pod = ?`, podId);
    this.ctx.storage.sql.exec(`DELETE FROM pods WHERE pod = ?`, podId);
  }

  async stats(): Promise<PrefixIndexStats> {
    const sql = this.ctx.storage.sql;
    const totals = sql.exec<{ n: number; p: number }>(`SELECT COUNT(*) AS n, COALESCE(SUM(precise), 0) AS p FROM entries`).one();
    const pods = sql
      .exec<{ pod: string; seq: number; n: number }>(
        `SELECT pods.pod AS pod, pods.seq AS seq, (SELECT COUNT(*) FROM entries WHERE entries.pod = pods.pod) AS n FROM pods ORDER BY pods.pod`,
      )
      .toArray()
      .map((r) => ({ podId: r.pod, seq: r.seq, entries: r.n }));
    return { entries: totals.n, precise: totals.p, pods };
  }

  /** TTL sweep and size bound. */
  override async alarm(): Promise<void> {
    const nowMs = this.now();
    this.sweep(nowMs);
    // Alarms run on the wall clock, whatever `now` says.
    await this.ctx.storage.setAlarm(Date.now() + this.opts.sweepMs);
  }

  private sweep(nowMs: number): void {
    const sql = this.ctx.storage.sql;
    sql.exec(`DELETE FROM entries WHERE expires_ms <= ?`, nowMs);
    const n = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM entries`).one().n;
    if (n > this.opts.maxEntries) {
      // Trim to 90% so that the next few writes do not trim again.
      const drop = n - Math.floor(this.opts.maxEntries * 0.9);
      sql.exec(
        `DELETE FROM entries WHERE (hash, pod) IN (SELECT hash, pod FROM entries ORDER BY touched_ms ASC LIMIT ?)`,
        drop,
      );
    }
    this.writesSinceTrim = 0;
  }

  private async afterWrite(nowMs: number): Promise<void> {
    // Counting rows costs a scan: only after enough writes could have crossed the bound.
    if (this.writesSinceTrim > this.opts.maxEntries / 10) this.sweep(nowMs);
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + this.opts.sweepMs);
  }
}
