/**
 * The router's contract: given a request and the live pods, choose where it runs.
 * Policies (round-robin, least-loaded, prefix-aware, prefix + SLO) are siblings behind
 * `RoutingPolicy`; the forwarding code only calls `choose`.
 */
import type { PodLoad, PodRole, SloTargets } from "@edgeserve/shared";

/** A pod as the PodRegistry knows it. */
export interface PodInfo {
  podId: string;
  url: string;
  models: string[];
  role: PodRole;
  blockSize: number;
  maxModelLen?: number;
  load: PodLoad;
  /** Epoch ms of the last registration or heartbeat. */
  lastSeenMs: number;
}

export interface RouteRequest {
  requestId: string;
  model: string;
  promptTokens: number;
  /** Block hashes of the prompt (shared/spec/block-hash.md), with the pods' block size. */
  blockHashes: string[];
  slo: SloTargets;
  maxTokens: number;
}

/** Longest cached prefix per pod id, in blocks, from the PrefixIndex. */
export type PrefixMatches = ReadonlyMap<string, number>;

export interface RouteDecision {
  /** Where decode (and, when colocated, prefill) runs. */
  pod: PodInfo;
  /** Tried in order if `pod` fails before the first token. */
  fallbacks: PodInfo[];
  /** Blocks of the prompt that `pod` is believed to hold. */
  cachedBlocks: number;
  /** Disaggregated plan: prefill here, then ship KV to `pod`. */
  prefillPod?: PodInfo;
  /** One line, for the x-edgeserve-route debug header and the request log. */
  explain: string;
  /** The cost model's time to first token on `pod` (ms), for `observeTtft`. */
  ttftMs?: number;
}

export interface RoutingPolicy {
  readonly name: string;
  /** null when no pod can serve the model. `pods` are already filtered to live ones. */
  choose(req: RouteRequest, pods: readonly PodInfo[], prefix: PrefixMatches): RouteDecision | null;
  /** The first token of a request routed by `decision` came `actualMs` after the choice. */
  observeTtft?(decision: RouteDecision, actualMs: number): void;
}
