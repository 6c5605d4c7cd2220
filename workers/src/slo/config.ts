/**
 * SLO classifier configuration: one typed object, validated once (at the Worker's boundary).
 * Per-class defaults are what a request gets when neither its hint nor its API key says more.
 */
import { z } from "zod";

const positive = z.number().finite().positive();

const classDefaults = z.object({
  /** Time-to-first-token target (interactive, compound). */
  ttftMs: positive.optional(),
  /** Time-per-output-token target (interactive). */
  tpotMs: positive.optional(),
  /** Fixed part of a whole-answer deadline: deadline = deadlineBaseMs + est_tokens · deadlinePerTokenMs. */
  deadlineBaseMs: positive.optional(),
  deadlinePerTokenMs: positive.optional(),
  /** Preemption order on the pod: lower is preempted first (protocol: 0..9). */
  priority: z.number().int().min(0).max(9),
});

export const sloConfigSchema = z.object({
  interactive: classDefaults,
  deadline: classDefaults,
  batch: classDefaults,
  compound: classDefaults,
  /** A non-streamed request without tools asking for at least this many tokens is batch work. */
  batchMinMaxTokens: z.number().int().positive(),
  /** Output-length estimate for a (key, model) that has no history yet. */
  priorOutputTokens: z.number().int().positive(),
  /** Finished requests remembered per (key, model) by the estimator. */
  estimatorSamples: z.number().int().min(4).max(4096),
  /** (key, model) pairs remembered; the least recently used is forgotten first. */
  estimatorKeys: z.number().int().positive(),
});

export type SloConfig = z.infer<typeof sloConfigSchema>;
export type ClassDefaults = z.infer<typeof classDefaults>;

export const defaultSloConfig: SloConfig = {
  interactive: { ttftMs: 1000, tpotMs: 100, priority: 7 },
  compound: { ttftMs: 2000, priority: 6 },
  deadline: { ttftMs: 5000, deadlineBaseMs: 2000, deadlinePerTokenMs: 60, priority: 5 },
  batch: { deadlineBaseMs: 600_000, priority: 1 },
  batchMinMaxTokens: 1024,
  priorOutputTokens: 256,
  estimatorSamples: 64,
  estimatorKeys: 10_000,
};

/** Defaults spread in, then validated: throws a ZodError that names the bad field. */
export function sloConfig(options: Partial<SloConfig> = {}): SloConfig {
  return sloConfigSchema.parse({ ...defaultSloConfig, ...options });
}
