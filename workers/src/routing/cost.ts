/**
 * The router's cost model: what a request would cost on a pod, in milliseconds, from the pod's
 * last load report plus what was routed to it since. Crude on purpose (linear in tokens); the
 * policies only compare pods with it.
 */
import type { InflightTracker } from "./inflight";
import type { RouterOptions } from "./options";
import type { PodInfo, PrefixMatches, RouteRequest } from "./types";

export interface PodEstimate {
  pod: PodInfo;
  /** Prompt blocks the index believes the pod holds. */
  cachedBlocks: number;
  /** Prompt tokens the pod would have to prefill. */
  uncachedTokens: number;
  /** Prefill work queued ahead of this request. */
  queueMs: number;
  /** queueMs + this request's uncached prefill. */
  ttftMs: number;
  /** Decode time per token with this request added to the running batch. */
  tpotMs: number;
  /** Enough free KV blocks for the uncached prompt and max_tokens. */
  kvFits: boolean;
}

/** Pods that can run the whole request here (prefill-only pods cannot decode). */
export function colocatedPods(req: RouteRequest, pods: readonly PodInfo[]): PodInfo[] {
  return pods.filter((p) => p.models.includes(req.model) && p.role !== "prefill");
}

export function estimate(
  req: RouteRequest,
  pod: PodInfo,
  prefix: PrefixMatches,
  opts: RouterOptions,
  inflight: InflightTracker | undefined,
  nowMs: number,
): PodEstimate {
  const load = pod.load;
  const cachedBlocks = Math.min(prefix.get(pod.podId) ?? 0, req.blockHashes.length);
  const uncachedTokens = Math.max(0, req.promptTokens - cachedBlocks * pod.blockSize);
  // Pods report rates per second of engine work (idle time excluded), i.e. what they can do; a pod
  // that has done no such work lately reports 0 and gets the configured default.
  const prefillTokS = (load.prefill_tok_s ?? 0) > 0 ? load.prefill_tok_s! : opts.prefillTokS;
  const decodeTokS = (load.decode_tok_s ?? 0) > 0 ? load.decode_tok_s! : opts.decodeTokS;
  const pending = inflight?.pending(pod, nowMs) ?? { requests: 0, tokens: 0 };
  const waitingTokens = (load.waiting_prefill_tokens ?? load.waiting * opts.avgPromptTokens) + pending.tokens;
  const queueMs = (1000 * waitingTokens) / prefillTokS;
  // The decode batch this request joins: what runs now, what was routed since the last report,
  // and itself. Queued prompts are not decoding yet; their cost is in queueMs.
  const batch = load.running + pending.requests + 1;
  // Time per output token: a pod that is decoding reports its measured step time (prefill chunks
  // riding along included); each request joining adds one decode token's cost. An idle pod, or one
  // that reports no step time, gets the batch over its decode rate.
  const tokenMs = 1000 / decodeTokS;
  const stepMs = load.decode_step_ms ?? 0;
  const tpotMs = stepMs > 0 && load.running > 0 ? stepMs + (pending.requests + 1) * tokenMs : batch * tokenMs;
  const freeTokens = load.free_blocks * pod.blockSize;
  return {
    pod,
    cachedBlocks,
    uncachedTokens,
    queueMs,
    ttftMs: queueMs + (1000 * uncachedTokens) / prefillTokS,
    tpotMs,
    kvFits: load.total_blocks === 0 || freeTokens >= uncachedTokens + req.maxTokens,
  };
}

/** Estimates for every pod, pods without room for the request's KV last. */
export function estimateAll(
  req: RouteRequest,
  pods: readonly PodInfo[],
  prefix: PrefixMatches,
  opts: RouterOptions,
  inflight: InflightTracker | undefined,
  nowMs: number,
): PodEstimate[] {
  return pods.map((p) => estimate(req, p, prefix, opts, inflight, nowMs));
}

/** Sort by `score` (lower first), KV-fitting pods before the rest; stable on pod id. */
export function rank(ests: PodEstimate[], score: (e: PodEstimate) => number): PodEstimate[] {
  return [...ests].sort(
    (a, b) => Number(b.kvFits) - Number(a.kvFits) || score(a) - score(b) || (a.pod.podId < b.pod.podId ? -1 : 1),
  );
}
