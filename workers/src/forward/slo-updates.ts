/**
 * Refined slack reaches the pod mid-generation (JITServe): as tokens stream back, the edge
 * re-estimates the request's output length (slo/estimator.ts, conditioned on what it has already
 * produced) and, when the estimate has moved enough, tells the pod with `POST /v1/slo_update`
 * (protocol `SloUpdate`), so the pod's slack-ordered scheduler (policy_slo.py) re-ranks it.
 *
 * Rate limit: an update goes out only when the estimate differs from the last value the pod got by
 * at least `minRelChange` (relative) and at least `minTokens` tokens were produced since the last
 * update; at most `maxUpdates` per request. Sends are fire-and-forget (waitUntil): a lost update
 * only leaves the pod with the older estimate, which its own growth rule still refines.
 */
import type { SloTargets, SloUpdate } from "@edgeserve/shared";
import type { BackendEvent, GenerateParams, InferenceBackend } from "../backends/types";
import { podHeaders } from "../backends/pod";

export interface SloUpdatePolicy {
  minRelChange: number;
  minTokens: number;
  maxUpdates: number;
}

export const defaultSloUpdatePolicy: SloUpdatePolicy = { minRelChange: 0.25, minTokens: 8, maxUpdates: 8 };

export interface SloUpdaterOptions {
  /** The pod that decodes the request (base URL, no trailing slash). */
  podUrl: string;
  /** The POD_SECRET (every call to a pod carries it). */
  secret: string;
  /** The targets the pod got with the request. */
  slo: SloTargets;
  /** Output-length estimate after `generated` tokens (capped at max_tokens, > generated). */
  estimate: (generated: number) => number;
  policy?: SloUpdatePolicy;
  fetch?: typeof fetch;
  waitUntil?: (p: Promise<unknown>) => void;
  timeoutMs?: number;
}

/** Decides when an update is due and sends it. One per request. */
export class SloUpdater {
  private lastSent: number;
  private lastAt = 0;
  /** Updates sent (the bodies, for logs and tests). */
  readonly sent: SloUpdate[] = [];
  private readonly policy: SloUpdatePolicy;

  constructor(
    private readonly requestId: string,
    private readonly opts: SloUpdaterOptions,
  ) {
    this.policy = opts.policy ?? defaultSloUpdatePolicy;
    this.lastSent = opts.slo.expected_output_tokens ?? 0;
  }

  /** Called with the running count of generated tokens after each tokens event. */
  onProgress(generated: number): void {
    const p = this.policy;
    if (this.sent.length >= p.maxUpdates || generated - this.lastAt < p.minTokens) return;
    const est = this.opts.estimate(generated);
    const base = Math.max(1, this.lastSent);
    if (Math.abs(est - this.lastSent) / base < p.minRelChange) return;
    this.lastSent = est;
    this.lastAt = generated;
    const body: SloUpdate = { request_id: this.requestId, expected_output_tokens: est };
    this.sent.push(body);
    const fetchFn = this.opts.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
    const call = fetchFn(`${this.opts.podUrl}/v1/slo_update`, {
      method: "POST",
      headers: podHeaders(this.opts.secret),
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 2000),
    })
      .then((r) => {
        if (r.status === 401) console.error(`slo_update to ${this.opts.podUrl}: HTTP 401, the pod refused the edge's POD_SECRET`);
        return r.body?.cancel();
      })
      .catch((e) => console.warn(`slo_update to ${this.opts.podUrl} failed: ${(e as Error).message}`));
    this.opts.waitUntil?.(call);
  }
}

/**
 * Wraps the backend that decodes on `opts.podUrl`: its events pass through unchanged; generated
 * tokens are counted and an SloUpdater sends refined estimates while they flow.
 */
export class SloUpdatingBackend implements InferenceBackend {
  readonly id: string;
  /** The updater of the last generate() call (tests and logs). */
  updater?: SloUpdater;

  constructor(
    private readonly inner: InferenceBackend,
    private readonly opts: SloUpdaterOptions,
  ) {
    this.id = inner.id;
  }

  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    const updater = new SloUpdater(p.requestId, this.opts);
    this.updater = updater;
    let generated = 0;
    for await (const ev of this.inner.generate(p)) {
      if (ev.type === "tokens") {
        generated += ev.tokenIds.length;
        updater.onProgress(generated);
      }
      yield ev;
    }
  }
}
