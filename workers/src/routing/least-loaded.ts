/** Least-loaded: the pod with the least queued prefill work (then fewest running), blind to the cache. */
import { colocatedPods, estimateAll, rank } from "./cost";
import { explainLine } from "./explain";
import { InflightTracker } from "./inflight";
import { routerOptions, type RouterOptions } from "./options";
import type { PodInfo, PrefixMatches, RouteDecision, RouteRequest, RoutingPolicy } from "./types";

export class LeastLoadedPolicy implements RoutingPolicy {
  readonly name = "least-loaded";
  private readonly opts: RouterOptions;
  private readonly inflight = new InflightTracker();

  constructor(options: Partial<RouterOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = routerOptions(options);
  }

  choose(req: RouteRequest, pods: readonly PodInfo[], _prefix: PrefixMatches): RouteDecision | null {
    const eligible = colocatedPods(req, pods);
    if (eligible.length === 0) return null;
    const nowMs = this.now();
    // Cache-blind: estimate as if nothing were cached, so the pick depends on load alone.
    const ranked = rank(estimateAll(req, eligible, new Map(), this.opts, this.inflight, nowMs), (e) => e.queueMs + e.tpotMs);
    const pick = ranked[0];
    this.inflight.record(pick.pod.podId, req.promptTokens, nowMs);
    const cachedBlocks = Math.min(_prefix.get(pick.pod.podId) ?? 0, req.blockHashes.length);
    return {
      pod: pick.pod,
      fallbacks: ranked.slice(1).map((e) => e.pod),
      cachedBlocks,
      explain: explainLine(this.name, ranked, req.blockHashes.length),
    };
  }
}
