/**
 * StreamRecord (shared/protocol/pod-protocol.schema.json), the NDJSON lines of a pod's
 * POST /v1/generate answer, as zod: every field the schema names, with its bounds and enums
 * (the error codes included), no extra fields, `t_ms` as long as `token_ids`, and the record's
 * `request_id` equal to the request's. `stream-record.test.ts` checks it against the shared
 * protocol vectors.
 */
import { z } from "zod";
import type { StreamRecord as StreamRecordType } from "@edgeserve/shared";

const RequestId = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/);
const TokenId = z.number().int().min(0).max(0xffffffff);
const nat = z.number().int().min(0);
const ms = z.number().min(0);

const TokensRecord = z
  .object({
    type: z.literal("tokens"),
    request_id: RequestId,
    token_ids: z.array(TokenId).min(1),
    t_ms: z.array(ms).min(1),
  })
  .strict()
  .refine((r) => r.t_ms.length === r.token_ids.length, { message: "t_ms must have one entry per token id", path: ["t_ms"] });

const FinalRecord = z
  .object({
    type: z.literal("final"),
    request_id: RequestId,
    finish_reason: z.enum(["stop", "length", "cancelled"]),
    usage: z.object({ prompt_tokens: nat, completion_tokens: nat, cached_tokens: nat }).strict(),
    timing: z
      .object({ queue_ms: ms.optional(), ttft_ms: ms.optional(), total_ms: ms.optional(), kv_transfer_ms: ms.optional() })
      .strict()
      .optional(),
  })
  .strict();

export const POD_ERROR_CODES = [
  "invalid_request",
  "unknown_model",
  "prompt_too_long",
  "overloaded",
  "cancelled",
  "kv_transfer_failed",
  "internal_error",
  "unauthorized",
] as const;

const ErrorRecord = z
  .object({
    type: z.literal("error"),
    request_id: RequestId.nullable().optional(),
    error: z.object({ code: z.enum(POD_ERROR_CODES), message: z.string(), param: z.string().nullable().optional() }).strict(),
  })
  .strict();

/** The protocol's StreamRecord, whatever request it belongs to. */
export const StreamRecord = z.union([TokensRecord, FinalRecord, ErrorRecord]);

const byType: Record<string, z.ZodTypeAny> = { tokens: TokensRecord, final: FinalRecord, error: ErrorRecord };

/**
 * One parsed NDJSON value from the pod: the record, or why it breaks the protocol. A record must
 * name `requestId` (an error record may say null: the pod could not read the request's id).
 */
export function checkStreamRecord(rec: unknown, requestId: string): StreamRecordType | string {
  if (typeof rec !== "object" || rec === null || Array.isArray(rec)) return "stream record is not an object";
  const type = (rec as { type?: unknown }).type;
  const schema = typeof type === "string" && Object.hasOwn(byType, type) ? byType[type] : undefined;
  if (!schema) return `unknown stream record type ${JSON.stringify(type)?.slice(0, 40)}`;
  const parsed = schema.safeParse(rec);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? issue.path.join(".") : "record";
    return `${type} record breaks the protocol at ${where}: ${issue.message}`;
  }
  const r = parsed.data as StreamRecordType;
  const id = (r as { request_id?: string | null }).request_id;
  if (id != null && id !== requestId) return `${type} record for request ${JSON.stringify(id)}, expected ${JSON.stringify(requestId)}`;
  return r;
}
