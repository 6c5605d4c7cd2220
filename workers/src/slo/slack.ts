/**
 * Slack: how much time a request can still lose and meet its SLO, given an estimate of the work
 * left (ms). The router compares it across pods; the pod scheduler (policy_slo.py) uses the same
 * definition: slack = min(ttft_ms − est_ttft, deadline_ms − est_finish), over the targets present.
 */
import type { SloTargets } from "@edgeserve/shared";

export interface WorkEstimate {
  /** Estimated time to the first token on a given pod (queueing + uncached prefill). */
  ttftMs: number;
  /** Estimated time per output token on that pod. */
  tpotMs: number;
}

/** Infinity when the request has no time target (pure batch). */
export function slackMs(t: SloTargets, w: WorkEstimate): number {
  let slack = Number.POSITIVE_INFINITY;
  if (t.ttft_ms !== undefined) slack = Math.min(slack, t.ttft_ms - w.ttftMs);
  const out = t.expected_output_tokens ?? 1;
  if (t.tpot_ms !== undefined) slack = Math.min(slack, (t.tpot_ms - w.tpotMs) * Math.max(1, out - 1));
  if (t.deadline_ms !== undefined) slack = Math.min(slack, t.deadline_ms - (w.ttftMs + w.tpotMs * Math.max(0, out - 1)));
  return slack;
}

/** Whether a finished request met its targets (used by the benchmark and request logs). */
export function metSlo(t: SloTargets, ttftMs: number, totalMs: number, outputTokens: number): boolean {
  if (t.ttft_ms !== undefined && ttftMs > t.ttft_ms) return false;
  if (t.tpot_ms !== undefined && outputTokens > 1 && (totalMs - ttftMs) / (outputTokens - 1) > t.tpot_ms) return false;
  if (t.deadline_ms !== undefined && totalMs > t.deadline_ms) return false;
  return true;
}
