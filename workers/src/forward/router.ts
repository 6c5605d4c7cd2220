/**
 * Picks the backends for one request: live pods that serve the model, ordered by the routing
 * policy (routing/), then the in-Worker runtime if the model allows it. The first entry runs the
 * request; the next is the one retry if the first fails before its first token.
 */
import { blockHashes, DEFAULT_BLOCK_SIZE, type SloTargets } from "@edgeserve/shared";
import { PodBackend } from "../backends/pod";
import type { InferenceBackend } from "../backends/types";
import type { EdgeConfig } from "../config";
import { REGISTRY_NAME } from "../durable/pod-registry";
import type { ModelSpec } from "../models";
import { createPolicy, type PodInfo, type RoutingPolicy } from "../routing";
import { localRuntime } from "../backends/local-runtime";
import { DisaggregatedBackend, transferId } from "../routing/disaggregated-backend";
import { indexShards, matchPrefix, notePlacement } from "../routing/prefix-lookup";
import { SloUpdatingBackend } from "./slo-updates";

export interface RouteInput {
  requestId: string;
  spec: ModelSpec;
  promptTokenIds: number[];
  maxTokens: number;
  slo: SloTargets;
  /**
   * max_tokens for the in-Worker runtime (a default one may be shorter than the pods'), or null
   * when the request does not fit its context: pods only. Undefined: the request's own.
   */
  localMaxTokens?: number | null;
  /**
   * Output-length estimate after `generated` tokens (the route's estimator). With it, the pod that
   * decodes gets refined estimates while tokens flow (forward/slo-updates.ts).
   */
  estimate?: (generated: number) => number;
}

export interface RouterDeps {
  env: Env;
  config: EdgeConfig;
  /** Outbound fetch to pods (tests inject pod doubles here). */
  fetch?: typeof fetch;
  waitUntil?: (p: Promise<unknown>) => void;
}

export interface RoutePlan {
  backends: InferenceBackend[];
  explain: string;
  /** Call when the first token arrives from the policy's pick (not a fallback): the policy learns its TTFT error. */
  observeFirstToken?: () => void;
}

// Policies keep per-isolate state (work in flight since the last heartbeat): one per isolate.
let policy: { name: string | undefined; policy: RoutingPolicy } | undefined;
function policyFor(name: string | undefined): RoutingPolicy {
  if (!policy || policy.name !== name) policy = { name, policy: createPolicy(name) };
  return policy.policy;
}

export function registryStub(env: Env) {
  return env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName(REGISTRY_NAME));
}

export async function planRoute(input: RouteInput, deps: RouterDeps, livePods: PodInfo[]): Promise<RoutePlan> {
  const { spec } = input;
  const backends: InferenceBackend[] = [];
  const notes: string[] = [];
  let observeFirstToken: (() => void) | undefined;
  if (spec.backends.includes("pod") && livePods.length > 0) {
    const blockSize = livePods[0].blockSize || DEFAULT_BLOCK_SIZE;
    const hashes = await blockHashes(spec.id, input.promptTokenIds, blockSize);
    const routing = policyFor(deps.env.ROUTING_POLICY);
    const decision = routing.choose(
      {
        requestId: input.requestId,
        model: spec.id,
        promptTokens: input.promptTokenIds.length,
        blockHashes: hashes,
        slo: input.slo,
        maxTokens: input.maxTokens,
      },
      livePods,
      await matchPrefix(deps.env.PREFIX_INDEX, spec.id, hashes, indexShards(deps.env)),
    );
    if (decision) {
      notes.push(decision.explain);
      const chosenAt = Date.now();
      if (routing.observeTtft) observeFirstToken = () => routing.observeTtft!(decision, Date.now() - chosenAt);
      // Approximate mode of the index: note the placement now, the pod's KV events confirm it later.
      const placed = notePlacement(deps.env.PREFIX_INDEX, spec.id, decision.pod.podId, hashes, indexShards(deps.env));
      if (deps.waitUntil) deps.waitUntil(placed);
      else await placed;
      // Sparse attention per SLO class (config ATTENTION_BY_CLASS), e.g. Quest for batch work.
      const attention = deps.config.attentionByClass[input.slo.class];
      const podBackend = (pod: PodInfo, extra: NonNullable<ConstructorParameters<typeof PodBackend>[0]["extra"]>) =>
        new PodBackend({
          podId: pod.podId,
          url: pod.url,
          secret: deps.config.podSecret,
          connectTimeoutMs: deps.config.podConnectTimeoutMs,
          idleTimeoutMs: deps.config.podIdleTimeoutMs,
          extra: attention ? { ...extra, attention } : extra,
          fetch: deps.fetch,
          waitUntil: deps.waitUntil,
        });
      const cachedPrefix = (blocks: number) => ({ block_size: blockSize, matched_blocks: blocks });
      // The pod that decodes gets the refined output-length estimate as tokens come back.
      const withUpdates = (b: InferenceBackend, decodePod: PodInfo): InferenceBackend =>
        input.estimate && input.slo.expected_output_tokens !== undefined
          ? new SloUpdatingBackend(b, { podUrl: decodePod.url, secret: deps.config.podSecret, slo: input.slo, estimate: input.estimate, fetch: deps.fetch, waitUntil: deps.waitUntil })
          : b;
      if (decision.prefillPod) {
        const tid = transferId(input.requestId);
        backends.push(
          withUpdates(
            new DisaggregatedBackend({
              prefill: podBackend(decision.prefillPod, { slo: input.slo, kv_transfer: { role: "send", transfer_id: tid, peer_url: decision.pod.url } }),
              decode: podBackend(decision.pod, { slo: input.slo, cached_prefix: cachedPrefix(decision.cachedBlocks), kv_transfer: { role: "receive", transfer_id: tid } }),
              waitUntil: deps.waitUntil,
            }),
            decision.pod,
          ),
        );
      }
      for (const pod of [decision.pod, ...decision.fallbacks]) {
        backends.push(withUpdates(podBackend(pod, { slo: input.slo, cached_prefix: cachedPrefix(pod === decision.pod ? decision.cachedBlocks : 0) }), pod));
      }
    }
  }
  if (spec.backends.includes("wasm") && localRuntime && input.localMaxTokens !== null) {
    // Last in line: it serves when no pod can, or as the retry when only one pod is live.
    const local = localRuntime(deps.env, spec);
    if (local) {
      const maxTokens = input.localMaxTokens;
      backends.push(maxTokens === undefined || maxTokens === input.maxTokens ? local : { id: local.id, generate: (p) => local.generate({ ...p, maxTokens }) });
      notes.push("wasm");
    }
  }
  return { backends, explain: notes.join("; ") || "no backend", observeFirstToken };
}
