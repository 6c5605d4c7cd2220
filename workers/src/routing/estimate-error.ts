/**
 * How wrong the cost model's TTFT estimates have been lately: relative errors |actual/estimate − 1|
 * of the last `size` first tokens, and a quantile of them. prefix-slo gives a cache up only for a
 * rescue that holds within this error (prefix-slo.ts), so a model that misjudges load by 2x makes
 * it keep its caches instead of acting on noise.
 */
export class EstimateErrorWindow {
  private readonly errs: number[] = [];
  private next = 0;

  constructor(private readonly size = 64) {}

  observe(estimateMs: number, actualMs: number): void {
    if (!(estimateMs > 0) || !(actualMs >= 0) || !Number.isFinite(actualMs)) return;
    const e = Math.abs(actualMs / estimateMs - 1);
    if (this.errs.length < this.size) this.errs.push(e);
    else this.errs[this.next] = e;
    this.next = (this.next + 1) % this.size;
  }

  get count(): number {
    return this.errs.length;
  }

  /** The q-quantile of the recorded errors (nearest rank); undefined with fewer than `min` of them. */
  quantile(q: number, min: number): number | undefined {
    if (this.errs.length < Math.max(1, min)) return undefined;
    const xs = [...this.errs].sort((a, b) => a - b);
    return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];
  }
}
