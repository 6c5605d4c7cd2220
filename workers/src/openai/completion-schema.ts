/** POST /v1/completions request body (legacy completions; one prompt per request). */
import { z } from "zod";
import { sloHintSchema } from "../slo/hint";
import { checkStreamOptions, neutral, sampling, text, unsupported } from "./common-schema";

const TokenId = z.number().int().min(0).max(0xffffffff);
const TokenArray = z.array(TokenId).min(1, "a token prompt cannot be empty").max(1_048_576);

const Prompt = z.union([
  text(),
  z.array(text()).length(1, "batched prompts are not supported: send one prompt per request"),
  TokenArray,
  z.array(TokenArray).length(1, "batched prompts are not supported: send one prompt per request"),
]);

export const CompletionRequest = z
  .object({
    model: z.string().min(1).max(256),
    prompt: Prompt,
    ...sampling,
    ...neutral,
    max_tokens: z.number().int().min(1).nullish(),
    logprobs: z.number().int().min(0).max(5).nullish().refine((v) => !v, unsupported("logprobs are not supported")),
    echo: z.boolean().nullish().refine((v) => !v, unsupported("echo is not supported")),
    suffix: z.string().nullish().refine((v) => !v, unsupported("suffix is not supported")),
    best_of: z.number().int().min(1).max(20).nullish().refine((v) => v == null || v === 1, unsupported("best_of > 1 is not supported")),
    /** EdgeServe extension: SLO hint (workers/src/slo/hint.ts). */
    edgeserve_slo: sloHintSchema.nullish(),
  })
  .strict()
  .superRefine(checkStreamOptions);

export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** The single prompt, as text or as token ids. */
export function promptOf(req: CompletionRequest): { text: string } | { tokenIds: number[] } {
  const p = req.prompt;
  if (typeof p === "string") return { text: p };
  if (p.length > 0 && typeof p[0] === "string") return { text: p[0] as string };
  if (p.length > 0 && Array.isArray(p[0])) return { tokenIds: p[0] as number[] };
  return { tokenIds: p as number[] };
}
