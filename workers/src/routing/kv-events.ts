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
import { parseBody } from "../openai/validate";
import { indexShards } from "./prefix-lookup";
import type { AppEnv } from "../types";

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

export const kvEvents = async (c: Context<AppEnv>) => {
  const batch = await parseBody(c, KvEventBatch);
  const parts = splitByShard(batch, indexShards(c.env));
  const results = await Promise.all(parts.map((p, shard) => prefixIndexStub(c.env.PREFIX_INDEX, batch.model, shard).applyEvents(p)));
  return c.json({ ok: true, applied: results.some((r) => r.applied), gap: results.some((r) => r.gap) });
};
