/**
 * The router's calls to the PrefixIndex: which pods hold the prompt's prefix (before the choice)
 * and where the prompt was sent (after it, the approximate mode). Both go to the one shard of the
 * model that the prompt's first block hash picks (durable/prefix-index.ts `shardOf`). Both degrade
 * to "nothing known" rather than fail a request: the index is an optimisation.
 */
import { MAX_SHARDS, prefixIndexStub, shardOf, type PrefixIndex } from "../durable/prefix-index";
import type { PrefixMatches } from "./types";

/** Index shards per model from the PREFIX_INDEX_SHARDS var (1 when unset; must be 1..64). */
export function indexShards(env: { PREFIX_INDEX_SHARDS?: string }): number {
  const raw = env.PREFIX_INDEX_SHARDS;
  if (raw === undefined || raw === "") return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > MAX_SHARDS) {
    throw new RangeError(`PREFIX_INDEX_SHARDS must be an integer in [1, ${MAX_SHARDS}], got "${raw}"`);
  }
  return n;
}

export async function matchPrefix(
  ns: DurableObjectNamespace<PrefixIndex>,
  model: string,
  hashes: string[],
  shards = 1,
): Promise<PrefixMatches> {
  if (hashes.length === 0) return new Map();
  try {
    const byPod = await prefixIndexStub(ns, model, shardOf(hashes[0], shards)).match(hashes);
    return new Map(Object.entries(byPod));
  } catch (e) {
    console.warn(`prefix index lookup failed for ${model}: ${(e as Error).message}`);
    return new Map();
  }
}

export async function notePlacement(
  ns: DurableObjectNamespace<PrefixIndex>,
  model: string,
  podId: string,
  hashes: string[],
  shards = 1,
): Promise<void> {
  if (hashes.length === 0) return;
  try {
    await prefixIndexStub(ns, model, shardOf(hashes[0], shards)).recordRoute(podId, hashes);
  } catch (e) {
    console.warn(`prefix index update failed for ${model}: ${(e as Error).message}`);
  }
}
