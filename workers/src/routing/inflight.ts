/**
 * Work the router sent to a pod that the pod's load report cannot show yet (it was routed after
 * the pod's last heartbeat). Without it every request of a burst lands on the pod that looked
 * idle at the last heartbeat.
 */
import type { PodInfo } from "./types";

/** Entries older than this are dropped even if the pod never reports again. */
const HORIZON_MS = 30_000;

export class InflightTracker {
  /** pod id → (routed at epoch ms, prompt tokens still to prefill). */
  private readonly byPod = new Map<string, { atMs: number; tokens: number }[]>();

  record(podId: string, tokens: number, nowMs: number): void {
    const list = this.byPod.get(podId) ?? [];
    list.push({ atMs: nowMs, tokens });
    this.byPod.set(podId, list);
  }

  /** Requests and prefill tokens routed to `pod` since its last report. */
  pending(pod: PodInfo, nowMs: number): { requests: number; tokens: number } {
    const list = this.byPod.get(pod.podId);
    if (!list) return { requests: 0, tokens: 0 };
    const keep = list.filter((e) => e.atMs >= pod.lastSeenMs && nowMs - e.atMs < HORIZON_MS);
    if (keep.length !== list.length) this.byPod.set(pod.podId, keep);
    let tokens = 0;
    for (const e of keep) tokens += e.tokens;
    return { requests: keep.length, tokens };
  }
}
