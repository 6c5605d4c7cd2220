/**
 * PrefixIndex sharding by first block: a prompt's lookups and its blocks' KV events meet in the
 * shard its first block hash picks; other chains spread over the model's other shards; every
 * shard sees each pod's seq without holes (no false demotion).
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { KvEvent, KvEventBatch } from "@edgeserve/shared";
import { blockHashes } from "@edgeserve/shared";
import { MODEL, POD_SECRET, post } from "../../test/helpers";
import { splitByShard } from "../routing/kv-events";
import { indexShards, matchPrefix, notePlacement } from "../routing/prefix-lookup";
import { prefixIndexStub, shardOf } from "./prefix-index";

const B = 4;
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
let fresh = 0;

/** Chains (one per "system prompt") whose first blocks fall in `shards` distinct shards. */
async function chainsInDistinctShards(model: string, shards: number): Promise<string[][]> {
  const byShard = new Map<number, string[]>();
  for (let s = 0; byShard.size < shards; s++) {
    const h = await blockHashes(model, range(1000 * s, 5 * B), B);
    if (!byShard.has(shardOf(h[0], shards))) byShard.set(shardOf(h[0], shards), h);
  }
  return [...byShard.entries()].sort((a, b) => a[0] - b[0]).map(([, h]) => h);
}

const stored = (h: string[], parent: string | null = null): KvEvent => ({ type: "stored", block_hashes: h, parent_hash: parent, root_hash: h[0] });

async function kvEvents(batch: KvEventBatch): Promise<Response> {
  return post("/internal/kv-events", batch, { authorization: `Bearer ${POD_SECRET}` });
}

describe("PrefixIndex shards", () => {
  it("reads the shard count from PREFIX_INDEX_SHARDS (wrangler.toml sets 4)", () => {
    expect(indexShards(env)).toBe(4);
    expect(indexShards({})).toBe(1);
    expect(() => indexShards({ PREFIX_INDEX_SHARDS: "0" })).toThrow(/PREFIX_INDEX_SHARDS/);
    expect(() => indexShards({ PREFIX_INDEX_SHARDS: "1.5" })).toThrow(/PREFIX_INDEX_SHARDS/);
  });

  it("splits a batch: rooted events to their shard, cleared and root-less events to all, the seq to every shard", () => {
    const a = "00000000" + "0".repeat(24); // shard 0 of 4
    const b = "00000003" + "0".repeat(24); // shard 3 of 4
    const batch: KvEventBatch = {
      pod_id: "p", model: "m", seq: 7, block_size: B,
      events: [
        { type: "cleared", block_hashes: [] },
        { type: "stored", block_hashes: [a], parent_hash: null, root_hash: a },
        { type: "evicted", block_hashes: [b], root_hash: b },
        { type: "stored", block_hashes: [b], parent_hash: null },
      ],
    };
    const parts = splitByShard(batch, 4);
    expect(parts.map((p) => p.seq)).toEqual([7, 7, 7, 7]);
    expect(parts.map((p) => p.events.map((e) => e.type))).toEqual([
      ["cleared", "stored", "stored"],
      ["cleared", "stored"],
      ["cleared", "stored"],
      ["cleared", "evicted", "stored"],
    ]);
    expect(splitByShard(batch, 1)).toEqual([batch]);
  });

  it("events from the pod endpoint land in the first block's shard, where the router's lookup finds them", async () => {
    // The endpoint takes catalog models only: fresh pod ids keep this test's rows apart.
    const model = MODEL;
    const [p1, p2] = [`pod-1-${++fresh}`, `pod-2-${fresh}`];
    const chains = await chainsInDistinctShards(model, 4);
    // p1 stores all four chains over two batches; p2 stores one
    expect((await kvEvents({ pod_id: p1, model, seq: 1, block_size: B, events: chains.slice(0, 2).map((h) => stored(h)) })).status).toBe(200);
    expect((await kvEvents({ pod_id: p1, model, seq: 2, block_size: B, events: chains.slice(2).map((h) => stored(h)) })).status).toBe(200);
    expect((await kvEvents({ pod_id: p2, model, seq: 1, block_size: B, events: [stored(chains[3].slice(0, 2))] })).status).toBe(200);
    for (let s = 0; s < 4; s++) {
      const shard = prefixIndexStub(env.PREFIX_INDEX, model, s);
      const stats = await shard.stats();
      // each shard holds its own chain only (5 blocks of p1, plus p2's 2 in shard 3)
      expect(stats.pods.find((p) => p.podId === p1)).toEqual({ podId: p1, seq: 2, entries: 5 });
      expect(stats.pods.find((p) => p.podId === p2)?.entries ?? 0).toBe(s === 3 ? 2 : 0);
      // and saw both of p1's batches: no gap, rows stay precise
      expect(await shard.match(chains[s], true)).toEqual(s === 3 ? { [p1]: 5, [p2]: 2 } : { [p1]: 5 });
    }
    expect(Object.fromEntries(await matchPrefix(env.PREFIX_INDEX, model, chains[3], 4))).toEqual({ [p1]: 5, [p2]: 2 });
    expect(Object.fromEntries(await matchPrefix(env.PREFIX_INDEX, model, chains[1], 4))).toEqual({ [p1]: 5 });
    // an eviction with its root reaches the same shard
    await kvEvents({ pod_id: p1, model, seq: 3, block_size: B, events: [{ type: "evicted", block_hashes: [chains[1][2]], root_hash: chains[1][0] }] });
    expect(Object.fromEntries(await matchPrefix(env.PREFIX_INDEX, model, chains[1], 4))).toEqual({ [p1]: 2 });
    // cleared reaches every shard
    await kvEvents({ pod_id: p2, model, seq: 2, block_size: B, events: [{ type: "cleared", block_hashes: [] }] });
    expect(Object.fromEntries(await matchPrefix(env.PREFIX_INDEX, model, chains[3], 4))).toEqual({ [p1]: 5 });
  });

  it("approximate placements go to the prompt's shard too, and many prompts spread over all shards", async () => {
    const model = `shard-model-${++fresh}`;
    const prompts = await Promise.all(range(0, 32).map((i) => blockHashes(model, range(50_000 + 100 * i, 3 * B), B)));
    for (const h of prompts) await notePlacement(env.PREFIX_INDEX, model, "pod-x", h, 4);
    const per = await Promise.all(range(0, 4).map(async (s) => (await prefixIndexStub(env.PREFIX_INDEX, model, s).stats()).entries));
    expect(per.reduce((x, y) => x + y, 0)).toBe(32 * 3);
    expect(per.every((n) => n > 0)).toBe(true);
    for (const h of prompts.slice(0, 5)) {
      expect(Object.fromEntries(await matchPrefix(env.PREFIX_INDEX, model, h, 4))).toEqual({ "pod-x": 3 });
    }
  });
});
