/**
 * The edge's configuration: one typed object, read from the Worker's vars/secrets and validated
 * once per isolate. Bad configuration is an operator error, reported as a 500 with the reason.
 */
import { z } from "zod";
import { sloHintSchema } from "../slo/hint";

const ApiKeyEntry = z
  .object({
    key: z.string().min(8, "an API key needs at least 8 characters"),
    name: z.string().min(1).max(64),
    /** Requests per minute. */
    rpm: z.number().int().positive(),
    /** Tokens (prompt + completion) per minute. */
    tpm: z.number().int().positive(),
    /** Default SLO hint for this key's requests (workers/src/slo/hint.ts); request hints override it. */
    slo: sloHintSchema.optional(),
  })
  .strict();
export type ApiKeyEntry = z.infer<typeof ApiKeyEntry>;

/** Pod-protocol AttentionOverrides (shared schema): sparse attention settings a request carries. */
const attentionOverrides = z
  .object({
    sparse: z.boolean().optional(),
    token_budget: z.number().int().min(16).max(1048576).optional(),
    sink_tokens: z.number().int().min(0).max(1048576).optional(),
    window_tokens: z.number().int().min(1).max(1048576).optional(),
    reselect_every: z.number().int().min(1).max(64).optional(),
  })
  .strict();
const sloClass = z.enum(["interactive", "deadline", "batch", "compound"]);

const EdgeConfigSchema = z.object({
  apiKeys: z
    .array(ApiKeyEntry)
    .min(1, "API_KEYS must list at least one key")
    // Limits are kept per name: two keys with one name would share (and hide) a budget.
    .refine((keys) => new Set(keys.map((k) => k.name)).size === keys.length, "API_KEYS names must be unique")
    .refine((keys) => new Set(keys.map((k) => k.key)).size === keys.length, "API_KEYS keys must be unique"),
  podSecret: z.string().min(8, "POD_SECRET needs at least 8 characters"),
  /** Interval the registry asks pods to heartbeat at; three missed beats make a pod stale. */
  heartbeatMs: z.number().int().positive(),
  /** Until the pod's response headers arrive. */
  podConnectTimeoutMs: z.number().int().positive(),
  /** Longest silence between two stream records from a pod (covers prefill before token 1). */
  podIdleTimeoutMs: z.number().int().positive(),
  /** Request bodies above this are refused with 413 before parsing. */
  maxBodyBytes: z.number().int().positive(),
  /** Sparse-attention settings sent to the pod per SLO class (a class not listed: the pod's own). */
  attentionByClass: z.record(sloClass, attentionOverrides).default({}),
});
export type EdgeConfig = z.infer<typeof EdgeConfigSchema>;

export const configDefaults = {
  heartbeatMs: 2_000,
  podConnectTimeoutMs: 10_000,
  podIdleTimeoutMs: 120_000,
  maxBodyBytes: 4 * 1024 * 1024,
} satisfies Partial<EdgeConfig>;

/** The vars the config is read from (see wrangler.toml). */
export interface ConfigVars {
  API_KEYS?: string;
  POD_SECRET?: string;
  HEARTBEAT_MS?: string;
  POD_CONNECT_TIMEOUT_MS?: string;
  POD_IDLE_TIMEOUT_MS?: string;
  /** JSON {class: AttentionOverrides}, e.g. {"batch": {"sparse": true, "token_budget": 2048}}. */
  ATTENTION_BY_CLASS?: string;
}

function parseJson(name: string, text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${name} is not valid JSON`);
  }
}

const num = (s: string | undefined) => (s === undefined || s === "" ? undefined : Number(s));

let cached: { vars: ConfigVars; config: EdgeConfig } | undefined;

/** Parses and validates the configuration; the result is cached while `vars` stays the same object. */
export function loadConfig(vars: ConfigVars): EdgeConfig {
  if (cached?.vars === vars) return cached.config;
  const raw = {
    ...configDefaults,
    apiKeys: parseJson("API_KEYS", vars.API_KEYS),
    podSecret: vars.POD_SECRET,
    ...(vars.ATTENTION_BY_CLASS && { attentionByClass: parseJson("ATTENTION_BY_CLASS", vars.ATTENTION_BY_CLASS) }),
    ...(num(vars.HEARTBEAT_MS) !== undefined && { heartbeatMs: num(vars.HEARTBEAT_MS) }),
    ...(num(vars.POD_CONNECT_TIMEOUT_MS) !== undefined && { podConnectTimeoutMs: num(vars.POD_CONNECT_TIMEOUT_MS) }),
    ...(num(vars.POD_IDLE_TIMEOUT_MS) !== undefined && { podIdleTimeoutMs: num(vars.POD_IDLE_TIMEOUT_MS) }),
  };
  const parsed = EdgeConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new Error(`edge configuration: ${first.path.join(".") || "(root)"}: ${first.message}`);
  }
  cached = { vars, config: parsed.data };
  return parsed.data;
}
