/**
 * PodRegistration (shared/protocol/pod-protocol.schema.json) as zod, for the edge endpoints the
 * pods call. `registration-schema.test.ts` checks it against the shared protocol vectors.
 */
import { z } from "zod";
import type { PodRegistration as PodRegistrationType } from "@edgeserve/shared";

const Id = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, "letters, digits and . _ : - only");
const ModelId = z.string().min(1).max(128);
const nat = z.number().int().min(0);

export const PodLoad = z
  .object({
    running: nat,
    waiting: nat,
    free_blocks: nat,
    total_blocks: nat,
    kv_usage: z.number().min(0).max(1).optional(),
    waiting_prefill_tokens: nat.optional(),
    decode_tok_s: z.number().min(0).optional(),
    prefill_tok_s: z.number().min(0).optional(),
    decode_step_ms: z.number().min(0).optional(),
  })
  .strict();

export const PodRegistration = z
  .object({
    pod_id: Id,
    url: z
      .string()
      .max(2048)
      .url()
      .refine((u) => /^https?:\/\//i.test(u), "must be an http(s) URL"),
    models: z.array(ModelId).nonempty(),
    role: z.enum(["prefill", "decode", "both"]),
    block_size: z.number().int().min(1),
    max_model_len: z.number().int().min(1).optional(),
    load: PodLoad,
  })
  .strict() satisfies z.ZodType<PodRegistrationType>;
