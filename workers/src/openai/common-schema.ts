/**
 * Request fields shared by /v1/chat/completions and /v1/completions, as zod schemas. Fields this
 * edge cannot honour are accepted only at their neutral value; anything else is a 400 whose
 * `param` names the field and whose code is `unsupported_parameter`.
 */
import { z } from "zod";

export const MAX_STOP_SEQUENCES = 4;
export const MAX_STOP_CHARS = 256;
/** Far above any context length here; stops absurd strings before tokenization. */
export const MAX_TEXT_CHARS = 1_000_000;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A string that is valid Unicode (no lone surrogates from `\ud800`-style escapes). */
export const text = (max = MAX_TEXT_CHARS, min = 0) =>
  z
    .string()
    .min(min, min === 1 ? "cannot be empty" : `must be at least ${min} characters`)
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !LONE_SURROGATE.test(s), { message: "contains a lone UTF-16 surrogate (invalid Unicode)", params: { code: "invalid_unicode" } });

/** Marks a custom issue as "valid OpenAI, but not supported here". */
export const unsupported = (message: string) => ({ message, params: { code: "unsupported_parameter" } });

/** Fields that are accepted only at a neutral value. */
export const neutral = {
  presence_penalty: z.number().min(-2).max(2).nullish().refine((v) => !v, unsupported("presence_penalty is not supported (only 0)")),
  frequency_penalty: z.number().min(-2).max(2).nullish().refine((v) => !v, unsupported("frequency_penalty is not supported (only 0)")),
  logit_bias: z
    .record(z.number().min(-100).max(100))
    .nullish()
    .refine((v) => !v || Object.keys(v).length === 0, unsupported("logit_bias is not supported")),
};

export const sampling = {
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  /** Extension (vLLM-style): 0 disables top-k. */
  top_k: z.number().int().min(0).max(1_000_000).nullish(),
  seed: z.number().int().min(0, "must be ≥ 0").max(Number.MAX_SAFE_INTEGER).nullish(),
  n: z
    .number()
    .int()
    .min(1)
    .max(128)
    .nullish()
    .refine((v) => v == null || v === 1, unsupported("n > 1 is not supported: ask for one choice per request")),
  stop: z
    .union([
      text(MAX_STOP_CHARS, 1),
      z.array(text(MAX_STOP_CHARS, 1)).max(MAX_STOP_SEQUENCES, `at most ${MAX_STOP_SEQUENCES} stop sequences`),
    ])
    .nullish(),
  stream: z.boolean().nullish(),
  stream_options: z
    .object({ include_usage: z.boolean().nullish(), include_obfuscation: z.boolean().nullish() })
    .strict()
    .nullish(),
  user: z.string().max(256).nullish(),
};

/** stream_options only make sense with stream: true (OpenAI rejects them otherwise). */
export function checkStreamOptions(
  body: { stream?: boolean | null; stream_options?: unknown },
  ctx: z.RefinementCtx,
): void {
  if (body.stream_options != null && body.stream !== true) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["stream_options"],
      message: "stream_options is only allowed when stream is true",
    });
  }
}

export type StopParam = string | string[] | null | undefined;

export function stopList(stop: StopParam): string[] {
  if (stop == null) return [];
  return typeof stop === "string" ? [stop] : stop;
}
