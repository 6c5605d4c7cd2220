/**
 * The output-length estimate shared by all isolates: samples live in one OutputLengths Durable
 * Object per (API key, model) (durable/output-estimator.ts); each isolate keeps a copy in its
 * OutputLengthEstimator and reads that synchronously.
 *
 *   - prime(): before classifying a request. The isolate's first request for a (key, model) waits
 *     for the object (one round trip); later ones use the copy and, when it is older than
 *     `refreshMs`, refresh it in the background (waitUntil).
 *   - observe(): a finished request's length goes into the copy at once and to the object in the
 *     background; the object answers with its ring, which replaces the copy.
 * A failing object only costs accuracy: the copy (or the prior) serves.
 */
import { outputLengthsStub, type OutputLengths } from "../durable/output-estimator";
import { defaultSloConfig } from "./config";
import { OutputLengthEstimator } from "./estimator";

export interface SharedEstimatorOptions {
  priorOutputTokens: number;
  samples: number;
  keys: number;
  /** A cached copy older than this is refreshed in the background. */
  refreshMs: number;
}

type Ns = DurableObjectNamespace<OutputLengths>;

export class SharedEstimator {
  readonly local: OutputLengthEstimator;
  /** (key, model) id → epoch ms of the last read from the object. Map order = LRU order. */
  private readonly fetchedAt = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(private readonly opts: SharedEstimatorOptions) {
    this.local = new OutputLengthEstimator({ priorOutputTokens: opts.priorOutputTokens, samples: opts.samples, keys: opts.keys });
  }

  private static id(apiKey: string, model: string): string {
    return `${apiKey}\u0000${model}`;
  }

  /** Makes the copy of (key, model) usable: awaits the object only the first time. */
  async prime(ns: Ns | undefined, apiKey: string, model: string, waitUntil?: (p: Promise<unknown>) => void, nowMs = Date.now()): Promise<void> {
    if (!ns) return;
    const id = SharedEstimator.id(apiKey, model);
    const at = this.fetchedAt.get(id);
    if (at !== undefined && nowMs - at < this.opts.refreshMs) return;
    const pending = this.inflight.get(id) ?? this.refresh(ns, apiKey, model, nowMs);
    if (at === undefined) await pending;
    else waitUntil?.(pending);
  }

  estimate(apiKey: string, model: string, maxTokens: number, generated = 0): number {
    return this.local.estimate(apiKey, model, maxTokens, generated);
  }

  /** Records a finished request's output length, here at once and in the shared object. */
  observe(ns: Ns | undefined, apiKey: string, model: string, outputTokens: number, waitUntil?: (p: Promise<unknown>) => void): void {
    if (!Number.isInteger(outputTokens) || outputTokens < 1) return;
    this.local.observe(apiKey, model, outputTokens);
    if (!ns) return;
    const call = outputLengthsStub(ns, apiKey, model)
      .observe([outputTokens], this.opts.samples)
      .then((ring) => {
        this.local.replace(apiKey, model, ring);
        this.touch(SharedEstimator.id(apiKey, model), Date.now());
      })
      .catch((e) => console.warn(`output-length object for ${model} failed: ${(e as Error).message}`));
    waitUntil?.(call);
  }

  private refresh(ns: Ns, apiKey: string, model: string, nowMs: number): Promise<void> {
    const id = SharedEstimator.id(apiKey, model);
    const p = outputLengthsStub(ns, apiKey, model)
      .samples()
      .then((ring) => {
        if (ring.length > 0) this.local.replace(apiKey, model, ring);
        this.touch(id, nowMs);
      })
      .catch((e) => {
        console.warn(`output-length object for ${model} failed: ${(e as Error).message}`);
        this.touch(id, nowMs); // do not retry on every request; the copy serves meanwhile
      })
      .finally(() => this.inflight.delete(id));
    this.inflight.set(id, p);
    return p;
  }

  private touch(id: string, nowMs: number): void {
    this.fetchedAt.delete(id);
    this.fetchedAt.set(id, nowMs);
    while (this.fetchedAt.size > this.opts.keys) this.fetchedAt.delete(this.fetchedAt.keys().next().value as string);
  }
}

/** The isolate's shared estimator, used by every request the isolate serves. */
export const sharedEstimator = new SharedEstimator({
  priorOutputTokens: defaultSloConfig.priorOutputTokens,
  samples: defaultSloConfig.estimatorSamples,
  keys: defaultSloConfig.estimatorKeys,
  refreshMs: 5_000,
});
