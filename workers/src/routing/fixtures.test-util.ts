/** Pods and requests for the routing tests. */
import type { PodLoad, PodRole, SloTargets } from "@edgeserve/shared";
import type { PodInfo, RouteRequest } from "./types";

export function pod(podId: string, load: Partial<PodLoad> = {}, role: PodRole = "both", models = ["m"]): PodInfo {
  return {
    podId,
    url: `http://${podId}:9000`,
    models,
    role,
    blockSize: 16,
    load: { running: 0, waiting: 0, free_blocks: 1000, total_blocks: 1000, prefill_tok_s: 1000, decode_tok_s: 100, ...load },
    lastSeenMs: 0,
  };
}

export function request(blocks: number, slo: SloTargets = { class: "interactive", ttft_ms: 1000, tpot_ms: 100, expected_output_tokens: 20 }): RouteRequest {
  return {
    requestId: "r",
    model: "m",
    promptTokens: blocks * 16 + 5,
    blockHashes: Array.from({ length: blocks }, (_, i) => i.toString(16).padStart(32, "0")),
    slo,
    maxTokens: 64,
  };
}
