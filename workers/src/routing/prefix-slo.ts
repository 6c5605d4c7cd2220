/**
 * Prefix + SLO: cache overlap and load are put in one unit (ms: queueing plus the prompt tokens the
 * pod would still have to prefill) and weighed against the request's SLO.
 *   - interactive / compound / deadline, three cases by the best slack (slo/slack.ts):
 *       meets: some pods meet the SLO by the estimate: among them, the one that adds least work
 *         (longest cached prefix, so the prefix is not computed twice and capacity stays with
 *         others), then the earliest first token;
 *       late: none does, but the best is late by less than HOPELESS_SHARE × its tightest budget:
 *         the least late pod, near-ties (`SLACK_TIE_MS`) by cached prefix;
 *       hopeless: late everywhere by more: its tokens will not count, so it is routed like batch
 *         work (least work), and the pod's SLO scheduler serves it after savable ones;
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
/** Late by more than this share of the tightest target on every pod: the SLO is lost. */
const HOPELESS_SHARE = 0.5;

/** The tightest time budget of a request (ms; a TPOT target counts over its expected tokens), as slack measures it. */
function tightestTarget(slo: RouteRequest["slo"]): number | undefined {
  const tpot = slo.tpot_ms !== undefined ? slo.tpot_ms * Math.max(1, (slo.expected_output_tokens ?? 1) - 1) : undefined;
  const ts = [slo.ttft_ms, slo.deadline_ms, tpot].filter((x): x is number => x !== undefined);
  return ts.length > 0 ? Math.min(...ts) : undefined;
}

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
    const leastWork = (e: PodEstimate) => e.ttftMs - e.queueMs + this.opts.batchQueueWeight * e.queueMs;
    let ranked: PodEstimate[];
    let mode = "";
    const target = tightestTarget(req.slo);
    const best = Math.max(...ests.map(slackOf));
    if (req.slo.class === "batch" || target === undefined) {
      ranked = rank(ests, leastWork);
    } else if (best >= 0) {
      // Pods that meet the SLO first, the one adding least work (longest cached prefix) first,
      // then the earliest first token; then the rest by slack.
      mode = " meets";
      ranked = rank(ests, (e) => {
        const sl = slackOf(e);
        return sl >= 0 ? e.uncachedTokens * 1e3 + Math.floor(e.ttftMs / SLACK_TIE_MS) : 1e12 - Math.floor(sl / SLACK_TIE_MS);
      });
    } else if (best >= -HOPELESS_SHARE * target) {
      // Late everywhere, but savable if the estimate is pessimistic: the least late pod; near-ties
      // (`SLACK_TIE_MS`) by cached prefix.
      mode = " late";
      ranked = rank(ests, (e) => -Math.floor(slackOf(e) / SLACK_TIE_MS) * 1e6 - e.cachedBlocks);
    } else {
      mode = " hopeless";
      ranked = rank(ests, leastWork);
    }
    const pick = ranked[0];
    this.inflight.record(pick.pod.podId, pick.uncachedTokens, nowMs);
    return {
      pod: pick.pod,
      fallbacks: ranked.slice(1).map((e) => e.pod),
      cachedBlocks: pick.cachedBlocks,
      explain: explainLine(head + mode, ranked, blocks, slackOf),
    };
  }
}
