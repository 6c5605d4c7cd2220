/**
 * Prefix-aware (cache affinity, as in the SGLang router): the pod holding the longest cached
 * prefix, ties broken by load; when that pod's queue is past `maxQueueMsForAffinity`, or nothing
 * is cached anywhere, the least-loaded pod.
 */
import { colocatedPods, estimateAll, rank, type PodEstimate } from "./cost";
import { explainLine } from "./explain";
import { InflightTracker } from "./inflight";
import { routerOptions, type RouterOptions } from "./options";
import type { PodInfo, PrefixMatches, RouteDecision, RouteRequest, RoutingPolicy } from "./types";

export class PrefixAwarePolicy implements RoutingPolicy {
  readonly name = "prefix-aware";
  private readonly opts: RouterOptions;
  private readonly inflight = new InflightTracker();

  constructor(options: Partial<RouterOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = routerOptions(options);
  }

  choose(req: RouteRequest, pods: readonly PodInfo[], prefix: PrefixMatches): RouteDecision | null {
    const eligible = colocatedPods(req, pods);
    if (eligible.length === 0) return null;
    const nowMs = this.now();
    const ests = estimateAll(req, eligible, prefix, this.opts, this.inflight, nowMs);
    const byLoad = (e: PodEstimate) => e.queueMs + e.tpotMs;
    let ranked = rank(ests, (e) => -e.cachedBlocks * 1e9 + byLoad(e));
    let why = "affinity";
    if (ranked[0].cachedBlocks === 0) {
      ranked = rank(ests, byLoad);
      why = "no-cache";
    } else if (ranked[0].queueMs > this.opts.maxQueueMsForAffinity) {
      ranked = rank(ests, byLoad);
      why = "overloaded";
    }
    const pick = ranked[0];
    this.inflight.record(pick.pod.podId, pick.uncachedTokens, nowMs);
    return {
      pod: pick.pod,
      fallbacks: ranked.slice(1).map((e) => e.pod),
      cachedBlocks: pick.cachedBlocks,
      explain: explainLine(`${this.name} ${why}`, ranked, req.blockHashes.length),
    };
  }
}
