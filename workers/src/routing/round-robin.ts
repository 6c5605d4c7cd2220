/** Round-robin over the pods that serve the model: the baseline every other policy is measured against. */
import { colocatedPods } from "./cost";
import type { PodInfo, PrefixMatches, RouteDecision, RouteRequest, RoutingPolicy } from "./types";

export class RoundRobinPolicy implements RoutingPolicy {
  readonly name = "round-robin";
  private next = 0;

  choose(req: RouteRequest, pods: readonly PodInfo[], prefix: PrefixMatches): RouteDecision | null {
    const eligible = colocatedPods(req, pods).sort((a, b) => (a.podId < b.podId ? -1 : 1));
    if (eligible.length === 0) return null;
    const i = this.next++ % eligible.length;
    const pod = eligible[i];
    const fallbacks = [...eligible.slice(i + 1), ...eligible.slice(0, i)];
    const cachedBlocks = Math.min(prefix.get(pod.podId) ?? 0, req.blockHashes.length);
    return { pod, fallbacks, cachedBlocks, explain: `${this.name} pick=${pod.podId} turn=${i}/${eligible.length}` };
  }
}
