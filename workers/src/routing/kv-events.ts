/**
 * POST /internal/kv-events: a pod's KvEventBatch (shared/protocol/pod-protocol.schema.json),
 * applied to the model's PrefixIndex shard. Behind the pod-secret middleware like the other
 * /internal routes.
 */
import type { Context } from "hono";
import { z } from "zod";
import type { KvEventBatch as KvEventBatchType } from "@edgeserve/shared";
import { prefixIndexStub } from "../durable/prefix-index";
import { parseBody } from "../openai/validate";
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
        })
        .strict(),
    ),
  })
  .strict() satisfies z.ZodType<KvEventBatchType>;

export const kvEvents = async (c: Context<AppEnv>) => {
  const batch = await parseBody(c, KvEventBatch);
  const result = await prefixIndexStub(c.env.PREFIX_INDEX, batch.model).applyEvents(batch);
  return c.json({ ok: true, ...result });
};
