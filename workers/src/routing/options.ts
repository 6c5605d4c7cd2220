/**
 * Router options: one typed object, validated once. The rates are fallbacks for pods whose load
 * report does not carry measured throughput yet (a pod that just started).
 */
import { z } from "zod";

export const routerOptionsSchema = z.object({
  /** Prefill tokens/s of a pod that reports no rate yet (a reported rate is believed). */
  prefillTokS: z.number().positive(),
  /** Aggregate decode tokens/s of a pod that reports no rate yet (a reported rate is believed). */
  decodeTokS: z.number().positive(),
  /** Prompt tokens assumed per waiting request when a pod does not report waiting_prefill_tokens. */
  avgPromptTokens: z.number().int().positive(),
  /** Disaggregate (prefill pod → decode pod) when at least this many prompt tokens are uncached. */
  disaggMinUncachedTokens: z.number().int().positive(),
  /** "auto": only when some live pod declares role prefill; "off": never. */
  disaggregation: z.enum(["auto", "off"]),
  /** prefix-aware: fall back to least-loaded when the best-overlap pod's queue exceeds this (ms). */
  maxQueueMsForAffinity: z.number().positive(),
  /** prefix-slo, batch class: weight of queueing time against the batch request's own prefill work. */
  batchQueueWeight: z.number().min(0),
  /**
   * prefix-slo: relative error assumed in the cost model's time estimates. The cached pod is left
   * only when it misses the SLO even with its estimates this much too high, for a pod that meets it
   * even with its estimates this much too low. The floor: once `estimateErrorMinSamples` first
   * tokens were observed, the `estimateErrorQuantile` of their measured TTFT errors is used when
   * larger (capped at 0.9).
   */
  estimateError: z.number().min(0).max(0.9),
  estimateErrorQuantile: z.number().gt(0).max(1),
  estimateErrorMinSamples: z.number().int().min(1),
  /** Shorter TTFT estimates are not learned from: fixed overheads (HTTP, streaming), not the model, decide them. */
  estimateErrorMinMs: z.number().min(0),
});

export type RouterOptions = z.infer<typeof routerOptionsSchema>;

export const defaultRouterOptions: RouterOptions = {
  prefillTokS: 2000,
  decodeTokS: 200,
  avgPromptTokens: 512,
  disaggMinUncachedTokens: 2048,
  disaggregation: "auto",
  maxQueueMsForAffinity: 5000,
  batchQueueWeight: 0.25,
  estimateError: 0.25,
  estimateErrorQuantile: 0.75,
  estimateErrorMinSamples: 16,
  estimateErrorMinMs: 200,
};

export function routerOptions(options: Partial<RouterOptions> = {}): RouterOptions {
  return routerOptionsSchema.parse({ ...defaultRouterOptions, ...options });
}
