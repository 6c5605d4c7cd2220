/**
 * PodRegistration (shared/protocol/pod-protocol.schema.json) as zod, for the edge endpoints the
 * pods call. `registration-schema.test.ts` checks it against the shared protocol vectors.
 * `RegistrationAtEdge` adds this edge's policy: every model a pod names must be in the catalog.
 */
import { z } from "zod";
import type { PodRegistration as PodRegistrationType } from "@edgeserve/shared";
import { MODELS } from "../models/catalog";

/** Models one pod may list (the schema's maxItems): registrations are stored whole in the PodRegistry. */
export const MAX_POD_MODELS = 64;

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
    models: z.array(ModelId).nonempty().max(MAX_POD_MODELS),
    role: z.enum(["prefill", "decode", "both"]),
    block_size: z.number().int().min(1),
    max_model_len: z.number().int().min(1).optional(),
    load: PodLoad,
  })
  .strict() satisfies z.ZodType<PodRegistrationType>;

const catalogIds = new Set(MODELS.map((m) => m.id));

/** `models[i]` must be a catalog id (a model this edge does not know could never be routed to). */
export function inCatalog(models: readonly string[], ctx: z.RefinementCtx): void {
  models.forEach((m, i) => {
    if (!catalogIds.has(m)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["models", i],
        message: `model '${m.slice(0, 128)}' is not in this edge's catalog (${[...catalogIds].join(", ")})`,
        params: { code: "model_not_found" },
      });
    }
  });
}

/** What POST /internal/pods/register and /heartbeat accept. */
export const RegistrationAtEdge = PodRegistration.superRefine((reg, ctx) => inCatalog(reg.models, ctx));
