/**
 * Routing policies, chosen by name (env `ROUTING_POLICY`; default prefix-slo). Each is a sibling
 * file implementing `RoutingPolicy`.
 */
import { LeastLoadedPolicy } from "./least-loaded";
import type { RouterOptions } from "./options";
import { PrefixAwarePolicy } from "./prefix-aware";
import { PrefixSloPolicy } from "./prefix-slo";
import { RoundRobinPolicy } from "./round-robin";
import type { RoutingPolicy } from "./types";

export const POLICY_NAMES = ["round-robin", "least-loaded", "prefix-aware", "prefix-slo"] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];
export const DEFAULT_POLICY: PolicyName = "prefix-slo";

/** Builds a policy; an unknown name throws an error that lists the known ones. */
export function createPolicy(name: string | undefined, options: Partial<RouterOptions> = {}, now?: () => number): RoutingPolicy {
  switch (name ?? DEFAULT_POLICY) {
    case "round-robin":
      return new RoundRobinPolicy();
    case "least-loaded":
      return new LeastLoadedPolicy(options, now);
    case "prefix-aware":
      return new PrefixAwarePolicy(options, now);
    case "prefix-slo":
      return new PrefixSloPolicy(options, now);
    default:
      throw new Error(`ROUTING_POLICY must be one of ${POLICY_NAMES.join(", ")}; got "${name}"`);
  }
}

export { routerOptions, type RouterOptions } from "./options";
export type { PodInfo, PrefixMatches, RouteDecision, RouteRequest, RoutingPolicy } from "./types";
