/**
 * Prefix + SLO: cache overlap and load are put in one unit (ms: queueing plus the prompt tokens the
 * pod would still have to prefill) and weighed against the request's SLO.
 *   - interactive / compound / deadline: among the pods where the request meets its SLO (slack ≥ 0,
 *     slo/slack.ts), the one with the earliest first token; near-ties (within `SLACK_TIE_MS`) go to
 *     the longer cached prefix, which leaves more capacity to others. When no pod can meet it, the
 *     pod where it is least late (most slack);
 *   - batch: the pod where the request costs least work (uncached prefill), queueing weighted by
 *     `batchQueueWeight`, so batch work follows the cache and fills whichever pod has room;
 *   - long uncached prompts on a cluster with prefill pods: a disaggregated plan.
 */
import { slackMs } from "../slo/slack";
import { colocatedPods, estimateAll, rank, type PodEstimate } from "./cost";
import { planDisaggregated } from "./disaggregate";
import { explainLine } from "./explain";
import { InflightTracker } from "./inflight";
import { routerOptions, type RouterOptions } from "./options";
import type { PodInfo, PrefixMatches, RouteDecision, RouteRequest, RoutingPolicy } from "./types";

/** Slack differences below this are noise in the cost model. */
const SLACK_TIE_MS = 50;

export class PrefixSloPolicy implements RoutingPolicy {
  readonly name = "prefix-slo";
  private readonly opts: RouterOptions;
  private readonly inflight = new InflightTracker();

  constructor(options: Partial<RouterOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = routerOptions(options);
  }

  choose(req: RouteRequest, pods: readonly PodInfo[], prefix: PrefixMatches): RouteDecision | null {
    const nowMs = this.now();
    const blocks = req.blockHashes.length;
    const head = `${this.name} class=${req.slo.class}`;

    const plan = planDisaggregated(req, pods, prefix, this.opts, this.inflight, nowMs);
    if (plan) {
      this.inflight.record(plan.prefill.pod.podId, plan.prefill.uncachedTokens, nowMs);
      return {
        pod: plan.decode.pod,
        fallbacks: plan.ranked.slice(1).map((e) => e.pod),
        cachedBlocks: plan.decode.cachedBlocks,
        prefillPod: plan.prefill.pod,
        explain: `${head} disagg prefill=${plan.prefill.pod.podId} cached=${plan.prefill.cachedBlocks}/${blocks} ttft~${Math.round(plan.prefill.ttftMs)}ms decode=${plan.decode.pod.podId} tpot~${Math.round(plan.decode.tpotMs)}ms`,
      };
    }

    const eligible = colocatedPods(req, pods);
    if (eligible.length === 0) return null;
    const ests = estimateAll(req, eligible, prefix, this.opts, this.inflight, nowMs);
    const slackOf = (e: PodEstimate) => slackMs(req.slo, { ttftMs: e.ttftMs, tpotMs: e.tpotMs });
    let ranked: PodEstimate[];
    if (req.slo.class === "batch") {
      ranked = rank(ests, (e) => e.ttftMs - e.queueMs + this.opts.batchQueueWeight * e.queueMs);
    } else {
      // Feasible pods first, by time to first token; then the infeasible, least late first.
      // Bucketing makes near-equal pods compare by cached prefix.
      const key = (e: PodEstimate) => {
        const s = slackOf(e);
        return s >= 0 ? Math.floor(e.ttftMs / SLACK_TIE_MS) : 1e6 - Math.floor(s / SLACK_TIE_MS);
      };
      ranked = rank(ests, (e) => key(e) * 1e6 - e.cachedBlocks);
    }
    const pick = ranked[0];
    this.inflight.record(pick.pod.podId, pick.uncachedTokens, nowMs);
    return {
      pod: pick.pod,
      fallbacks: ranked.slice(1).map((e) => e.pod),
      cachedBlocks: pick.cachedBlocks,
      explain: explainLine(head, ranked, blocks, slackOf),
    };
  }
}
