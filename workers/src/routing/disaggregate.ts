/**
 * DistServe-style plan: a long uncached prompt is prefilled on a prefill pod and its KV shipped
 * to a decode pod, so that the long prefill does not stall the decode pod's running requests
 * (their TPOT). Used by prefix-slo; null when the cluster has no prefill pods, the prompt is short,
 * or no distinct decode pod exists.
 */
import { estimateAll, rank, type PodEstimate } from "./cost";
import type { InflightTracker } from "./inflight";
import type { RouterOptions } from "./options";
import type { PodInfo, PrefixMatches, RouteRequest } from "./types";

export interface DisaggPlan {
  prefill: PodEstimate;
  decode: PodEstimate;
  ranked: PodEstimate[];
}

export function planDisaggregated(
  req: RouteRequest,
  pods: readonly PodInfo[],
  prefix: PrefixMatches,
  opts: RouterOptions,
  inflight: InflightTracker | undefined,
  nowMs: number,
): DisaggPlan | null {
  if (opts.disaggregation === "off") return null;
  const serving = pods.filter((p) => p.models.includes(req.model));
  if (!serving.some((p) => p.role === "prefill")) return null;
  const ests = estimateAll(req, serving, prefix, opts, inflight, nowMs);
  const prefillSide = rank(ests.filter((e) => e.pod.role !== "decode"), (e) => e.ttftMs);
  if (prefillSide.length === 0 || prefillSide[0].uncachedTokens < opts.disaggMinUncachedTokens) return null;
  const prefill = prefillSide[0];
  // The decode pod holds the whole KV once it arrives, so pick it by decode load alone.
  const decodeSide = rank(ests.filter((e) => e.pod.role !== "prefill" && e.pod.podId !== prefill.pod.podId), (e) => e.tpotMs);
  if (decodeSide.length === 0) return null;
  return { prefill, decode: decodeSide[0], ranked: decodeSide };
}
