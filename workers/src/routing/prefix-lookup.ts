/**
 * The router's two calls to the PrefixIndex: which pods hold the prompt's prefix (before the
 * choice) and where the prompt was sent (after it, the approximate mode). Both degrade to
 * "nothing known" rather than fail a request: the index is an optimisation.
 */
import { prefixIndexStub, type PrefixIndex } from "../durable/prefix-index";
import type { PrefixMatches } from "./types";

export async function matchPrefix(ns: DurableObjectNamespace<PrefixIndex>, model: string, hashes: string[]): Promise<PrefixMatches> {
  if (hashes.length === 0) return new Map();
  try {
    const byPod = await prefixIndexStub(ns, model).match(hashes);
    return new Map(Object.entries(byPod));
  } catch (e) {
    console.warn(`prefix index lookup failed for ${model}: ${(e as Error).message}`);
    return new Map();
  }
}

export async function notePlacement(ns: DurableObjectNamespace<PrefixIndex>, model: string, podId: string, hashes: string[]): Promise<void> {
  if (hashes.length === 0) return;
  try {
    await prefixIndexStub(ns, model).recordRoute(podId, hashes);
  } catch (e) {
    console.warn(`prefix index update failed for ${model}: ${(e as Error).message}`);
  }
}
