/**
 * Which pods exist, what they serve and how loaded they are. Pods register and then heartbeat
 * with their load (POST /internal/pods/*); a pod silent for three heartbeat intervals is stale:
 * it stays listed for diagnosis but is not returned by `livePods`, and is dropped after
 * `FORGET_AFTER_MS`. One global object (`idFromName("global")`), SQLite-backed, cached in memory.
 */
import { DurableObject } from "cloudflare:workers";
import type { PodLoad, PodRegistration } from "@edgeserve/shared";
import { loadConfig } from "../config";
import { indexShards } from "../routing/prefix-lookup";
import type { PodInfo } from "../routing/types";
import { prefixIndexStub } from "./prefix-index";

export const REGISTRY_NAME = "global";
/** Stale pods are forgotten after this long; a pod that comes back simply registers again. */
export const FORGET_AFTER_MS = 10 * 60_000;
export const MISSED_BEATS = 3;

type PodRow = {
  pod_id: string;
  url: string;
  models: string;
  role: string;
  block_size: number;
  max_model_len: number | null;
  load: string;
  last_seen_ms: number;
};

export class PodRegistry extends DurableObject<Env> {
  private pods = new Map<string, PodInfo>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS pods (
        pod_id TEXT PRIMARY KEY, url TEXT NOT NULL, models TEXT NOT NULL, role TEXT NOT NULL,
        block_size INTEGER NOT NULL, max_model_len INTEGER, load TEXT NOT NULL, last_seen_ms INTEGER NOT NULL)`);
      for (const row of ctx.storage.sql.exec<PodRow>(`SELECT * FROM pods`)) {
        this.pods.set(row.pod_id, fromRow(row));
      }
    });
  }

  /** Interval pods should heartbeat at. */
  heartbeatMs(): number {
    return loadConfig(this.env).heartbeatMs;
  }

  /** Registers or refreshes a pod (a heartbeat is the same upsert; its `load` is the news). */
  async upsert(reg: PodRegistration, nowMs: number = Date.now()): Promise<{ heartbeatMs: number; known: boolean }> {
    const known = this.pods.has(reg.pod_id);
    const info: PodInfo = {
      podId: reg.pod_id,
      url: reg.url.replace(/\/+$/, ""),
      models: [...reg.models],
      role: reg.role,
      blockSize: reg.block_size,
      maxModelLen: reg.max_model_len,
      load: reg.load,
      lastSeenMs: nowMs,
    };
    this.pods.set(info.podId, info);
    this.ctx.storage.sql.exec(
      `INSERT OR REPLACE INTO pods (pod_id, url, models, role, block_size, max_model_len, load, last_seen_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      info.podId, info.url, JSON.stringify(info.models), info.role, info.blockSize,
      info.maxModelLen ?? null, JSON.stringify(info.load), nowMs,
    );
    if ((await this.ctx.storage.getAlarm()) === null) {
      await this.ctx.storage.setAlarm(Date.now() + FORGET_AFTER_MS);
    }
    return { heartbeatMs: this.heartbeatMs(), known };
  }

  /** Pods heard from within three heartbeat intervals, optionally only those serving `model`. */
  livePods(model?: string, nowMs: number = Date.now()): PodInfo[] {
    const horizon = nowMs - MISSED_BEATS * this.heartbeatMs();
    const out: PodInfo[] = [];
    for (const p of this.pods.values()) {
      if (p.lastSeenMs >= horizon && (model === undefined || p.models.includes(model))) out.push(p);
    }
    return out;
  }

  /**
   * For one model: the live pods, and how many pods serving it the registry knows at all (stale
   * ones included, until FORGET_AFTER_MS). `known` > 0 means this deployment has pods for the
   * model, even if none is live now (generate/job.ts: 503 rather than 400).
   */
  podsServing(model: string, nowMs: number = Date.now()): { live: PodInfo[]; known: number } {
    let known = 0;
    for (const p of this.pods.values()) if (p.models.includes(model)) known++;
    return { live: this.livePods(model, nowMs), known };
  }

  /** Every known pod, stale ones included (for /health and debugging). */
  allPods(): PodInfo[] {
    return [...this.pods.values()];
  }

  remove(podId: string): boolean {
    this.ctx.storage.sql.exec(`DELETE FROM pods WHERE pod_id = ?`, podId);
    return this.pods.delete(podId);
  }

  /** Forgets pods silent for FORGET_AFTER_MS, here and in their models' prefix index shards. */
  override async alarm(): Promise<void> {
    const now = Date.now();
    const forgotten: PodInfo[] = [];
    for (const p of [...this.pods.values()]) {
      if (now - p.lastSeenMs > FORGET_AFTER_MS) {
        this.remove(p.podId);
        forgotten.push(p);
      }
    }
    if (this.pods.size > 0) await this.ctx.storage.setAlarm(now + FORGET_AFTER_MS);
    if (forgotten.length > 0) await this.dropFromPrefixIndex(forgotten);
  }

  /**
   * The index keeps a row per pod in its `pods` table and its entries until they expire: drop
   * them with the pod. A shard that fails is left to its TTLs (logged); the next alarm does not
   * retry, since the pod is gone from the registry.
   */
  private async dropFromPrefixIndex(pods: PodInfo[]): Promise<void> {
    const shards = indexShards(this.env);
    const drops: Promise<void>[] = [];
    for (const p of pods) {
      for (const model of p.models) {
        for (let shard = 0; shard < shards; shard++) drops.push(prefixIndexStub(this.env.PREFIX_INDEX, model, shard).dropPod(p.podId));
      }
    }
    const failed = (await Promise.allSettled(drops)).filter((r) => r.status === "rejected");
    if (failed.length > 0) {
      console.warn(JSON.stringify({ msg: "prefix index dropPod failed", shards: failed.length, error: String((failed[0] as PromiseRejectedResult).reason) }));
    }
  }
}

function fromRow(row: PodRow): PodInfo {
  return {
    podId: row.pod_id,
    url: row.url,
    models: JSON.parse(row.models) as string[],
    role: row.role as PodInfo["role"],
    blockSize: row.block_size,
    maxModelLen: row.max_model_len ?? undefined,
    load: JSON.parse(row.load) as PodLoad,
    lastSeenMs: row.last_seen_ms,
  };
}
