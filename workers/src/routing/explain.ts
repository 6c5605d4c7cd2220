/**
 * The one-line explanation behind `x-edgeserve-route`: the policy, the pick and why, and the
 * runners-up, e.g.
 *   prefix-slo class=interactive pick=pod-a cached=12/40 ttft~230ms slack~770ms | pod-b cached=0/40 ttft~910ms
 */
import type { PodEstimate } from "./cost";

function round(ms: number): string {
  return Number.isFinite(ms) ? `${Math.round(ms)}ms` : "inf";
}

export function describe(e: PodEstimate, blocks: number, slack?: number): string {
  let s = `${e.pod.podId} cached=${e.cachedBlocks}/${blocks} ttft~${round(e.ttftMs)}`;
  if (slack !== undefined) s += ` slack~${round(slack)}`;
  if (!e.kvFits) s += " kv-full";
  return s;
}

export function explainLine(head: string, ranked: PodEstimate[], blocks: number, slackOf?: (e: PodEstimate) => number): string {
  const [pick, ...rest] = ranked;
  const alts = rest.slice(0, 2).map((e) => describe(e, blocks, slackOf?.(e)));
  return [`${head} pick=${describe(pick, blocks, slackOf?.(pick))}`, ...alts].join(" | ");
}
