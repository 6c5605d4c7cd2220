/**
 * POST /internal/kv-events: a pod's KvEventBatch (shared/protocol/pod-protocol.schema.json),
 * applied to the model's PrefixIndex shards. Behind the pod-secret middleware like the other
 * /internal routes.
 *
 * Sharding (durable/prefix-index.ts `shardOf`): a stored or evicted event goes to the shard of its
 * `root_hash`; `cleared`, and events from pods that do not send root_hash, go to every shard (a
 * hash in a shard its prompts never reach is never matched: harmless). Every shard gets every
 * batch, with no events when none are its own, so each shard sees the pod's seq without holes and
 * only real losses demote its rows.
 */
import type { Context } from "hono";
import { z } from "zod";
import type { KvEventBatch as KvEventBatchType } from "@edgeserve/shared";
import { prefixIndexStub, shardOf } from "../durable/prefix-index";
import { MODELS } from "../models/catalog";
import { parseBody } from "../openai/validate";
import { indexShards } from "./prefix-lookup";
import type { AppEnv } from "../types";

/**
 * Work one batch may cost the index: events, and hash rows written over all shards (an event
 * without root_hash, and `cleared`, go to every shard). 65 536 rows are a 1M-token prompt stored
 * at block size 16, or seconds of a busy pod's events (a pod cuts a batch every 0.1 s by default);
 * A3 measured 100 000 hashes x 4 shards at 7.3 s in local workerd. A batch over either bound is
 * not applied but not refused either (a 4xx would make the pod retry it forever, holding back
 * every later batch): its seq counts as seen and its events as lost, so the index demotes the
 * pod's rows as after a gap.
 */
export const MAX_BATCH_EVENTS = 65_536;
export const MAX_BATCH_ROWS = 65_536;

const catalogIds = new Set(MODELS.map((m) => m.id));

const Hash = z.string().regex(/^[0-9a-f]{32}$/, "a block hash is 32 lowercase hex digits");

export const KvEventBatch = z
  .object({
    pod_id: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, "letters, digits and . _ : - only"),
    model: z.string().min(1).max(128),
    seq: z.number().int().min(0),
    block_size: z.number().int().min(1),
    events: z.array(
      z
        .object({
          type: z.enum(["stored", "evicted", "cleared"]),
          block_hashes: z.array(Hash),
          parent_hash: Hash.nullable().optional(),
          root_hash: Hash.optional(),
        })
        .strict(),
    ),
  })
  .strict() satisfies z.ZodType<KvEventBatchType>;

/** What POST /internal/kv-events accepts: the protocol's batch, for a model in the catalog. */
export const KvEventBatchAtEdge = KvEventBatch.superRefine((b, ctx) => {
  if (!catalogIds.has(b.model)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["model"], message: "not a model in this edge's catalog", params: { code: "model_not_found" } });
  }
});

/** The batch each of `shards` shards gets (same seq, its own events). */
export function splitByShard(batch: KvEventBatchType, shards: number): KvEventBatchType[] {
  if (shards <= 1) return [batch];
  const parts: KvEventBatchType[] = Array.from({ length: shards }, () => ({ ...batch, events: [] }));
  for (const ev of batch.events) {
    if (ev.type !== "cleared" && ev.root_hash) parts[shardOf(ev.root_hash, shards)].events.push(ev);
    else for (const p of parts) p.events.push(ev);
  }
  return parts;
}

/** Why `batch` is too much work to apply over `shards` shards, or undefined when it is not. */
export function overBound(batch: KvEventBatchType, shards: number): string | undefined {
  if (batch.events.length > MAX_BATCH_EVENTS) return `${batch.events.length} events (at most ${MAX_BATCH_EVENTS})`;
  let rows = 0;
  for (const ev of batch.events) rows += ev.block_hashes.length * (ev.type !== "cleared" && ev.root_hash ? 1 : shards);
  if (rows > MAX_BATCH_ROWS) return `${rows} hash rows over ${shards} shard(s) (at most ${MAX_BATCH_ROWS})`;
  return undefined;
}

export const kvEvents = async (c: Context<AppEnv>) => {
  const batch = await parseBody(c, KvEventBatchAtEdge);
  const shards = indexShards(c.env);
  const dropped = overBound(batch, shards);
  if (dropped) {
    c.get("log").set({ model: batch.model, error_code: "kv_events_dropped", error: `pod ${batch.pod_id} seq ${batch.seq}: ${dropped}` });
    const lost = { ...batch, events: [] };
    await Promise.all(Array.from({ length: shards }, (_, shard) => prefixIndexStub(c.env.PREFIX_INDEX, batch.model, shard).applyEvents(lost, { lost: true })));
    return c.json({ ok: true, applied: false, gap: true, dropped: `too large: ${dropped}; counted as lost events` });
  }
  const parts = splitByShard(batch, shards);
  const results = await Promise.all(parts.map((p, shard) => prefixIndexStub(c.env.PREFIX_INDEX, batch.model, shard).applyEvents(p)));
  return c.json({ ok: true, applied: results.some((r) => r.applied), gap: results.some((r) => r.gap) });
};
