/**
 * A GPU pod as an InferenceBackend, over the pod protocol (shared/spec/pod-protocol.md):
 * POST /v1/generate answers NDJSON StreamRecords. Failures before the first token are marked
 * retryable so the caller can try another pod. When the consumer stops early (client gone, stop
 * sequence matched) the fetch is aborted and POST /v1/cancel tells the pod to free the request:
 * from the abort listener of `p.signal` when the client leaves, from `finally` otherwise.
 * Every request to a pod carries the deployment's POD_SECRET as a Bearer token; a pod that answers
 * 401 does not take it (a misconfigured pod, or an edge with the wrong secret): the error is the
 * edge's, `pod_unauthorized`, worth one try on another pod, and the client's answer is a 5xx.
 */
import type { ErrorRecord, GenerateRequest, StreamRecord } from "@edgeserve/shared";
import type { BackendEvent, GenerateParams, InferenceBackend } from "./types";
import { checkStreamRecord } from "../pods/stream-record";
import { isParseFailure, NdjsonReader, TimeoutError } from "./ndjson";

export interface PodBackendOptions {
  podId: string;
  /** Base URL, no trailing slash. */
  url: string;
  /** The POD_SECRET, sent as `Authorization: Bearer` on every call to the pod. */
  secret: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Fields the router adds to the request (SLO targets, cached-prefix hint, the class's attention settings). */
  extra?: Pick<GenerateRequest, "slo" | "cached_prefix" | "kv_transfer" | "attention">;
  fetch?: typeof fetch;
  /** Keeps the cancel call alive after the response ended (ExecutionContext.waitUntil). */
  waitUntil?: (p: Promise<unknown>) => void;
}

/**
 * Pod requests of this isolate that may still run on a pod: request id → pod base URL → the
 * secret to show it. An entry leaves when the pod is done with it or was sent its cancel; one
 * whose request died silently stays until `cancelLeftoverPodWork` (generate/orphans.ts) sends the
 * cancel for it.
 */
const inFlight = new Map<string, Map<string, string>>();

function noteInFlight(requestId: string, url: string, secret: string | undefined): void {
  const pods = inFlight.get(requestId) ?? new Map<string, string>();
  if (secret !== undefined) pods.set(url, secret);
  else pods.delete(url);
  if (pods.size > 0) inFlight.set(requestId, pods);
  else inFlight.delete(requestId);
}

/** POST /v1/cancel to every pod still listed for `requestId`, with the caller's fetch and waitUntil. */
export function cancelLeftoverPodWork(requestId: string, fetchFn: typeof fetch, waitUntil: (p: Promise<unknown>) => void): number {
  const pods = [...(inFlight.get(requestId) ?? [])];
  inFlight.delete(requestId);
  for (const [url, secret] of pods) waitUntil(postCancel(fetchFn, url, secret, requestId, 5000));
  return pods.length;
}

/** The headers of every edge → pod call. */
export function podHeaders(secret: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${secret}`, "content-type": "application/json", ...extra };
}

function postCancel(fetchFn: typeof fetch, url: string, secret: string, requestId: string, timeoutMs: number): Promise<unknown> {
  return fetchFn(`${url}/v1/cancel`, {
    method: "POST",
    headers: podHeaders(secret),
    body: JSON.stringify({ request_id: requestId }),
    signal: AbortSignal.timeout(timeoutMs),
  })
    .then((r) => r.body?.cancel())
    .catch(() => {});
}

/** Pod error codes after which another pod may well succeed. */
const RETRYABLE_CODES = new Set(["overloaded", "internal_error", "kv_transfer_failed"]);

export class PodBackend implements InferenceBackend {
  readonly id: string;
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: PodBackendOptions) {
    this.id = `pod:${opts.podId}`;
    this.fetchFn = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  toRequest(p: GenerateParams): GenerateRequest {
    return {
      request_id: p.requestId,
      model: p.model,
      prompt_token_ids: p.promptTokenIds as GenerateRequest["prompt_token_ids"],
      max_tokens: p.maxTokens,
      sampling: { temperature: p.temperature, top_p: p.topP, top_k: p.topK, ...(p.seed !== undefined && { seed: p.seed }) },
      stop_token_ids: [...new Set(p.stopTokenIds)].slice(0, 64),
      ...this.opts.extra,
    };
  }

  async *generate(p: GenerateParams): AsyncGenerator<BackendEvent> {
    const upstream = new AbortController();
    let produced = false;
    // True once the pod has nothing more to do for this request; otherwise leaving cancels it.
    let finished = false;
    let cancelSent = false;
    const cancelOnce = () => {
      noteInFlight(p.requestId, this.opts.url, undefined);
      if (finished || cancelSent) return;
      cancelSent = true;
      this.cancel(p.requestId, upstream);
    };
    // The cancel goes out from the abort listener: in workerd a request whose client left never
    // runs this generator again (its finally included), but the abort event still fires.
    const onClientAbort = () => {
      cancelOnce();
      upstream.abort(p.signal.reason);
    };
    p.signal.addEventListener("abort", onClientAbort);
    const fail = (code: string, message: string, retryable = !produced): BackendEvent => ({
      type: "error",
      code,
      message: `${this.id}: ${message}`,
      retryable,
    });
    try {
      if (p.signal.aborted) {
        finished = true;
        return;
      }
      noteInFlight(p.requestId, this.opts.url, this.opts.secret);
      let res: Response;
      const connectTimer = setTimeout(() => upstream.abort(new TimeoutError(this.opts.connectTimeoutMs)), this.opts.connectTimeoutMs);
      try {
        res = await this.fetchFn(`${this.opts.url}/v1/generate`, {
          method: "POST",
          headers: podHeaders(this.opts.secret, { "x-request-id": p.requestId }),
          body: JSON.stringify(this.toRequest(p)),
          signal: upstream.signal,
        });
      } catch (e) {
        if (p.signal.aborted) return;
        const timedOut = upstream.signal.reason instanceof TimeoutError;
        finished = !timedOut;
        yield fail(timedOut ? "pod_timeout" : "pod_unreachable", timedOut ? `no answer within ${this.opts.connectTimeoutMs} ms` : `fetch failed: ${(e as Error).message}`);
        return;
      } finally {
        clearTimeout(connectTimer);
      }
      if (res.status !== 200 || !res.body) {
        finished = true;
        yield await this.httpError(res, fail);
        return;
      }
      const reader = new NdjsonReader(res.body);
      for (;;) {
        let rec: unknown;
        try {
          rec = await reader.next(this.opts.idleTimeoutMs);
        } catch (e) {
          reader.cancel();
          if (p.signal.aborted) return;
          if (e instanceof TimeoutError) yield fail("pod_timeout", `no stream record for ${e.ms} ms`);
          else yield fail("pod_stream_broken", `stream failed: ${(e as Error).message}`);
          return;
        }
        if (rec === undefined) {
          if (p.signal.aborted) return;
          finished = true;
          yield fail("pod_stream_truncated", "stream ended without a final record");
          return;
        }
        const checked = isParseFailure(rec)
          ? `unparseable stream line (${rec.parseError}): ${rec.line}`
          : checkStreamRecord(rec, p.requestId);
        if (typeof checked === "string") {
          reader.cancel();
          yield fail("bad_pod_response", checked);
          return;
        }
        if (checked.type === "tokens") {
          produced = true;
          yield { type: "tokens", tokenIds: checked.token_ids };
        } else if (checked.type === "final") {
          finished = true;
          const u = checked.usage;
          yield {
            type: "final",
            finishReason: checked.finish_reason,
            usage: { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens, cachedTokens: u.cached_tokens },
          };
          return;
        } else {
          finished = true;
          const code = checked.error.code;
          yield fail(code, checked.error.message, !produced && RETRYABLE_CODES.has(code));
          return;
        }
      }
    } finally {
      p.signal.removeEventListener("abort", onClientAbort);
      cancelOnce();
    }
  }

  /** Stops the upstream stream and asks the pod to free the request (best effort). */
  private cancel(requestId: string, upstream: AbortController): void {
    upstream.abort(new Error("cancelled by the edge"));
    this.opts.waitUntil?.(postCancel(this.fetchFn, this.opts.url, this.opts.secret, requestId, this.opts.connectTimeoutMs));
  }

  private async httpError(res: Response, fail: (code: string, msg: string, retryable?: boolean) => BackendEvent): Promise<BackendEvent> {
    if (res.status === 401) {
      // Not the client's doing: this pod does not take the edge's POD_SECRET. Another pod may.
      await res.body?.cancel();
      console.error(`${this.id} (${this.opts.url}) refused the edge's POD_SECRET (HTTP 401): the pod and the edge are configured with different secrets`);
      return fail("pod_unauthorized", "HTTP 401: the pod refused the edge's credentials", true);
    }
    let record: ErrorRecord | undefined;
    try {
      const body = (await res.json()) as ErrorRecord;
      if (body?.type === "error" && typeof body.error?.code === "string") record = body;
    } catch {
      // Not JSON: the status says enough.
    }
    if (record) {
      const code = record.error.code;
      return fail(code, `HTTP ${res.status}: ${record.error.message}`, RETRYABLE_CODES.has(code) || res.status >= 500);
    }
    return fail(res.status >= 500 ? "pod_http_error" : "pod_rejected", `HTTP ${res.status}`, res.status >= 500 || res.status === 429);
  }
}
