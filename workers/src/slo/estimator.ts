/**
 * Output-length estimate per (API key, model), learned from finished requests and refined as
 * generation goes (JITServe: the request's length is imprecise at arrival and sharpens later).
 *
 * estimate(g) is the median length of the remembered requests that ran longer than g tokens:
 * once a request has produced g tokens, the short ones it resembled are ruled out. With no such
 * history it falls back to the growth rule the pod uses too (policy_slo.py): max(prior, ⌈1.5·g⌉).
 * The result is capped at the request's max_tokens and is always > g.
 *
 * This class is one isolate's copy (bounded LRU over keys, a ring of samples per key);
 * shared-estimator.ts keeps it in step with the OutputLengths Durable Object that all isolates
 * share (durable/output-estimator.ts).
 */

/** Growth factor applied once a request outlives every estimate (shared with the pod). */
export const GROWTH = 1.5;

export interface EstimatorOptions {
  priorOutputTokens: number;
  samples: number;
  keys: number;
}

export class OutputLengthEstimator {
  /** key → ring of finished output lengths (tokens). Map order = LRU order. */
  private readonly rings = new Map<string, { lens: number[]; next: number }>();

  constructor(private readonly opts: EstimatorOptions) {}

  private static id(apiKey: string, model: string): string {
    return `${apiKey}\u0000${model}`;
  }

  /** Records a finished request's output length. */
  observe(apiKey: string, model: string, outputTokens: number): void {
    if (!Number.isInteger(outputTokens) || outputTokens < 1) return;
    const id = OutputLengthEstimator.id(apiKey, model);
    let ring = this.rings.get(id);
    if (ring) this.rings.delete(id);
    else ring = { lens: [], next: 0 };
    this.rings.set(id, ring);
    if (ring.lens.length < this.opts.samples) ring.lens.push(outputTokens);
    else ring.lens[ring.next] = outputTokens;
    ring.next = (ring.next + 1) % this.opts.samples;
    while (this.rings.size > this.opts.keys) {
      this.rings.delete(this.rings.keys().next().value as string);
    }
  }

  /** Replaces the remembered lengths of (key, model) (from the shared OutputLengths object). */
  replace(apiKey: string, model: string, lens: readonly number[]): void {
    const id = OutputLengthEstimator.id(apiKey, model);
    this.rings.delete(id);
    const kept = lens.filter((n) => Number.isInteger(n) && n >= 1).slice(-this.opts.samples);
    if (kept.length > 0) this.rings.set(id, { lens: kept, next: kept.length % this.opts.samples });
    while (this.rings.size > this.opts.keys) {
      this.rings.delete(this.rings.keys().next().value as string);
    }
  }

  /** Number of finished requests remembered for (key, model). */
  count(apiKey: string, model: string): number {
    return this.rings.get(OutputLengthEstimator.id(apiKey, model))?.lens.length ?? 0;
  }

  /**
   * Expected total output tokens for a request of (key, model) that has produced `generated`
   * tokens so far (0 at arrival), capped at `maxTokens`.
   */
  estimate(apiKey: string, model: string, maxTokens: number, generated = 0): number {
    const ring = this.rings.get(OutputLengthEstimator.id(apiKey, model));
    let est: number | undefined;
    if (ring) {
      const longer = ring.lens.filter((n) => n > generated).sort((a, b) => a - b);
      if (longer.length > 0) est = longer[longer.length >> 1];
    }
    if (est === undefined) est = Math.max(this.opts.priorOutputTokens, Math.ceil(GROWTH * generated));
    return Math.max(1, Math.min(maxTokens, Math.max(est, generated + 1)));
  }
}
