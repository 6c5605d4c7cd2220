/**
 * Prefix + SLO: cache affinity first, spent only to rescue an SLO. Cache overlap and load are put
 * in one unit (ms: queueing plus the prompt tokens the pod would still have to prefill) and
 * weighed against the request's SLO.
 *   - Some pod holds part of the prompt: the affinity pod is the one with the longest cached prefix
 *     (as prefix-aware). The request stays there unless that pod misses the SLO even if the cost
 *     model overestimates it by `estimateError`, and another pod meets it even if the model
 *     underestimates it by as much (a rescue); the rescuer is the meeting pod that adds least work.
 *     That error is the option's floor or, once first tokens came back (`observeTtft`), the
 *     measured spread of the model's TTFT estimates when larger (estimate-error.ts).
 *     Late on the affinity pod with no sure rescue, it stays: leaving would lose the cache (capacity
 *     for everyone) and buy nothing the estimate can vouch for. The TPOT term takes part in this
 *     test only as a decode-only step (cost.ts): a pod's SLO scheduler (policy_slo.py) caps the
 *     prefill riding along with decodes, so a cached pod is TPOT-infeasible only when its decode
 *     batch alone is too slow.
 *   - Nothing cached anywhere: three cases by the best slack (slo/slack.ts):
 *       meets: some pods meet the SLO by the estimate: among them, the one that adds least work,
 *         then the earliest first token;
 *       late: none does, but the best is late by less than HOPELESS_SHARE × its tightest budget:
 *         the least late pod, near-ties (`SLACK_TIE_MS`) by cached prefix;
 *       hopeless: late everywhere by more: its tokens will not count, so it is routed like batch
 *         work (least work), and the pod's SLO scheduler serves it after savable ones;
 *   - batch: the affinity pod unless its queue is past `maxQueueMsForAffinity`, else the pod where
 *     the request costs least work (uncached prefill), queueing weighted by `batchQueueWeight`, so
 *     batch work fills whichever pod has room;
 *   - long uncached prompts on a cluster with prefill pods: a disaggregated plan.
 */
import { slackMs } from "../slo/slack";
import { colocatedPods, estimateAll, rank, type PodEstimate } from "./cost";
import { planDisaggregated } from "./disaggregate";
import { EstimateErrorWindow } from "./estimate-error";
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
  private readonly ttftErrors = new EstimateErrorWindow();

  constructor(options: Partial<RouterOptions> = {}, private readonly now: () => number = Date.now) {
    this.opts = routerOptions(options);
  }

  observeTtft(decision: RouteDecision, actualMs: number): void {
    if (decision.ttftMs !== undefined && decision.ttftMs >= this.opts.estimateErrorMinMs) this.ttftErrors.observe(decision.ttftMs, actualMs);
  }

  /** The relative error a rescue must survive: the option, or the measured one when larger. */
  estimateError(): number {
    const measured = this.ttftErrors.quantile(this.opts.estimateErrorQuantile, this.opts.estimateErrorMinSamples) ?? 0;
    return Math.min(0.9, Math.max(this.opts.estimateError, measured));
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
        ttftMs: plan.prefill.ttftMs,
        explain: `${head} disagg prefill=${plan.prefill.pod.podId} cached=${plan.prefill.cachedBlocks}/${blocks} ttft~${Math.round(plan.prefill.ttftMs)}ms decode=${plan.decode.pod.podId} tpot~${Math.round(plan.decode.tpotMs)}ms`,
      };
    }

    const eligible = colocatedPods(req, pods);
    if (eligible.length === 0) return null;
    const ests = estimateAll(req, eligible, prefix, this.opts, this.inflight, nowMs);
    const slackOf = (e: PodEstimate) => slackMs(req.slo, { ttftMs: e.ttftMs, tpotMs: e.tpotMs });
    const { ranked, mode } = this.bySlack(req, ests, slackOf);
    const { pick, why } = this.spendCache(req, ranked, slackOf);
    const order = [pick, ...ranked.filter((e) => e !== pick)];
    this.inflight.record(pick.pod.podId, pick.uncachedTokens, nowMs);
    return {
      pod: pick.pod,
      fallbacks: order.slice(1).map((e) => e.pod),
      cachedBlocks: pick.cachedBlocks,
      ttftMs: pick.ttftMs,
      explain: `${explainLine(`${head} ${why ?? mode}`, order, blocks, slackOf)} err~${this.estimateError().toFixed(2)}`,
    };
  }

  /**
   * The affinity pod, or whom the slack ranking puts first when nothing is cached, the affinity pod
   * is overloaded (batch) or it surely misses the SLO where another pod surely meets it (`why`
   * undefined: the ranking's own mode explains the pick).
   */
  private spendCache(req: RouteRequest, ranked: PodEstimate[], slackOf: (e: PodEstimate) => number): { pick: PodEstimate; why?: string } {
    const fits = ranked.filter((e) => e.kvFits);
    const most = Math.max(0, ...fits.map((e) => e.cachedBlocks));
    // Longest cached prefix; among equals, the slack ranking's order.
    const affinity = fits.find((e) => e.cachedBlocks === most);
    if (!affinity || most === 0) return { pick: ranked[0] };
    if (req.slo.class === "batch" && affinity.queueMs > this.opts.maxQueueMsForAffinity) return { pick: ranked[0] };
    if (slackOf(affinity) >= 0) return { pick: affinity, why: "affinity" };
    const err = this.estimateError();
    const scaled = (e: PodEstimate, f: number) => slackMs(req.slo, { ttftMs: e.ttftMs * f, tpotMs: e.tpotMs * f });
    if (scaled(affinity, 1 - err) < 0) {
      // `ranked` puts pods that meet the SLO first, the one adding least work first.
      const rescuer = fits.find((e) => e !== affinity && scaled(e, 1 + err) >= 0);
      if (rescuer) return { pick: rescuer, why: "rescue" };
    }
    return { pick: affinity, why: "affinity-late" };
  }

  /** Pods ordered by the SLO alone (cached prefix only as the work it saves), and the case. */
  private bySlack(req: RouteRequest, ests: PodEstimate[], slackOf: (e: PodEstimate) => number): { ranked: PodEstimate[]; mode: string } {
    const leastWork = (e: PodEstimate) => e.ttftMs - e.queueMs + this.opts.batchQueueWeight * e.queueMs;
    const target = tightestTarget(req.slo);
    const best = Math.max(...ests.map(slackOf));
    if (req.slo.class === "batch" || target === undefined) return { ranked: rank(ests, leastWork), mode: "least-work" };
    if (best >= 0) {
      // Pods that meet the SLO first, the one adding least work (longest cached prefix) first,
      // then the earliest first token; then the rest by slack.
      const ranked = rank(ests, (e) => {
        const sl = slackOf(e);
        return sl >= 0 ? e.uncachedTokens * 1e3 + Math.floor(e.ttftMs / SLACK_TIE_MS) : 1e12 - Math.floor(sl / SLACK_TIE_MS);
      });
      return { ranked, mode: "meets" };
    }
    if (best >= -HOPELESS_SHARE * target) {
      // Late everywhere, but savable if the estimate is pessimistic: the least late pod; near-ties
      // (`SLACK_TIE_MS`) by cached prefix.
      return { ranked: rank(ests, (e) => -Math.floor(slackOf(e) / SLACK_TIE_MS) * 1e6 - e.cachedBlocks), mode: "late" };
    }
    return { ranked: rank(ests, leastWork), mode: "hopeless" };
  }
}
