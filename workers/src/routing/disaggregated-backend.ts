/**
 * A disaggregated plan as one InferenceBackend: the prompt goes to the prefill pod with
 * `kv_transfer: send` (it prefills and ships the KV to the decode pod over TCP) and, at the same
 * time, to the decode pod with `kv_transfer: receive` (it waits for the KV, then decodes). The
 * output is the decode pod's stream. If the prefill side fails, the decode pod still answers: it
 * prefills the prompt itself once its wait for the KV times out (gpu-backend kv_transfer/serve.py).
 */
import type { BackendEvent, GenerateParams, InferenceBackend } from "../backends/types";

export interface DisaggregatedBackendOptions {
  /** Backend to the prefill pod, its requests carrying kv_transfer role "send". */
  prefill: InferenceBackend;
  /** Backend to the decode pod, its requests carrying kv_transfer role "receive". */
  decode: InferenceBackend;
  waitUntil?: (p: Promise<unknown>) => void;
  /** Called with the prefill side's last event (final with timing, or an error). */
  onPrefillDone?: (ev: BackendEvent | undefined) => void;
}

export class DisaggregatedBackend implements InferenceBackend {
  readonly id: string;

  constructor(private readonly opts: DisaggregatedBackendOptions) {
    this.id = `${opts.prefill.id}>${opts.decode.id}`;
  }

  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    const prefill = (async () => {
      let last: BackendEvent | undefined;
      for await (const ev of this.opts.prefill.generate(p)) last = ev;
      if (last?.type === "error") console.warn(`disaggregated prefill ${this.opts.prefill.id} failed: ${last.message}`);
      this.opts.onPrefillDone?.(last);
    })();
    this.opts.waitUntil?.(prefill);
    yield* this.opts.decode.generate(p);
  }
}

/** A transfer id from the request id: unique per request, valid as a protocol RequestId. */
export function transferId(requestId: string): string {
  return `kv-${requestId}`.slice(0, 128);
}
