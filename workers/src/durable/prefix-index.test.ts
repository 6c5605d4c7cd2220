import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { KvEvent, KvEventBatch } from "@edgeserve/shared";
import { blockHashes } from "@edgeserve/shared";
import { prefixIndexStub, type PrefixIndex } from "./prefix-index";

const MODEL = "test-model";
const B = 4;

/** Hash chain of a prompt: shared prefixes give shared hashes, as on the pods. */
async function chain(tokens: number[]): Promise<string[]> {
  return blockHashes(MODEL, tokens, B);
}
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

function batch(pod: string, seq: number, ...events: KvEvent[]): KvEventBatch {
  return { pod_id: pod, model: MODEL, seq, block_size: B, events };
}
const stored = (hashes: string[], parent: string | null = null): KvEvent => ({ type: "stored", block_hashes: hashes, parent_hash: parent });
const evicted = (hashes: string[]): KvEvent => ({ type: "evicted", block_hashes: hashes });

let fresh = 0;
/** A new shard per test: storage is shared across the tests of a file. */
function index(name = `${MODEL}-${++fresh}`) {
  return prefixIndexStub(env.PREFIX_INDEX, name);
}

/** The error an RPC call rejects with (RPC promises are awaited once, here). */
async function rejection(call: () => Promise<unknown>): Promise<Error> {
  try {
    await call();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected the call to fail");
}

describe("PrefixIndex", () => {
  it("gives the longest cached prefix per pod under interleaved events from several pods", async () => {
    const idx = index();
    const sys = range(1000, 16); // a shared 4-block system prompt
    const a = await chain([...sys, ...range(1, 8)]); // 6 blocks
    const b = await chain([...sys, ...range(50, 8)]); // shares 4 blocks with a
    // pod-1 stores a in two batches, pod-2 stores b; the batches interleave.
    await idx.applyEvents(batch("pod-1", 1, stored(a.slice(0, 3))));
    await idx.applyEvents(batch("pod-2", 1, stored(b.slice(0, 2))));
    await idx.applyEvents(batch("pod-1", 2, stored(a.slice(3), a[2])));
    await idx.applyEvents(batch("pod-2", 2, stored(b.slice(2), b[1])));
    expect(await idx.match(a)).toEqual({ "pod-1": 6, "pod-2": 4 });
    expect(await idx.match(b)).toEqual({ "pod-1": 4, "pod-2": 6 });
    const other = await chain(range(7000, 24));
    expect(await idx.match(other)).toEqual({});
    expect(await idx.match([])).toEqual({});
  });

  it("shortens a match at an evicted block, and forgets a pod on cleared", async () => {
    const idx = index();
    const h = await chain(range(0, 40)); // 10 blocks
    await idx.applyEvents(batch("p", 1, stored(h)));
    await idx.applyEvents(batch("q", 1, stored(h.slice(0, 5))));
    await idx.applyEvents(batch("p", 2, evicted([h[9], h[8]])));
    expect(await idx.match(h)).toEqual({ p: 8, q: 5 });
    // a hole in the middle: the KV beyond it cannot be reused
    await idx.applyEvents(batch("p", 3, evicted([h[3]])));
    expect(await idx.match(h)).toEqual({ p: 3, q: 5 });
    await idx.applyEvents(batch("q", 2, { type: "cleared", block_hashes: [] }));
    expect(await idx.match(h)).toEqual({ p: 3 });
    // stored again after eviction: back in
    await idx.applyEvents(batch("p", 4, stored([h[3]], h[2])));
    expect(await idx.match(h)).toEqual({ p: 8 });
  });

  it("ignores duplicate or old batches and demotes a pod's rows after a seq gap", async () => {
    const idx = index();
    const h = await chain(range(0, 16));
    await idx.applyEvents(batch("p", 5, stored(h)));
    expect(await idx.applyEvents(batch("p", 5, evicted(h)))).toEqual({ applied: false, gap: false });
    expect(await idx.applyEvents(batch("p", 4, evicted(h)))).toEqual({ applied: false, gap: false });
    expect(await idx.match(h)).toEqual({ p: 4 });
    expect(await idx.applyEvents(batch("p", 9, stored([])))).toEqual({ applied: true, gap: true });
    // still used for routing, but no longer precise
    expect(await idx.match(h)).toEqual({ p: 4 });
    expect(await idx.match(h, true)).toEqual({});
    expect((await idx.stats()).precise).toBe(0);
  });

  it("approximate mode: routed prompts count until their short TTL, precise rows outlive them", async () => {
    const idx = index();
    const h = await chain(range(0, 32)); // 8 blocks
    let t = 1_000_000;
    await runInDurableObject(idx, (o) => {
      (o as PrefixIndex).now = () => t;
    });
    await idx.configure({ approxTtlMs: 1000, preciseTtlMs: 10_000 });
    await idx.recordRoute("r", h);
    await idx.applyEvents(batch("p", 1, stored(h.slice(0, 2))));
    await idx.recordRoute("p", h); // p's first two rows stay precise
    expect(await idx.match(h)).toEqual({ r: 8, p: 8 });
    expect(await idx.match(h, true)).toEqual({ p: 2 });
    t += 1500;
    expect(await idx.match(h)).toEqual({ p: 2 });
    t += 10_000;
    expect(await idx.match(h)).toEqual({});
    // the alarm deletes what expired
    expect((await idx.stats()).entries).toBeGreaterThan(0);
    expect(await runDurableObjectAlarm(idx)).toBe(true);
    expect((await idx.stats()).entries).toBe(0);
  });

  it("stays within maxEntries, dropping the least recently touched rows", async () => {
    const idx = index();
    let t = 5_000_000;
    await runInDurableObject(idx, (o) => {
      (o as PrefixIndex).now = () => t;
    });
    await idx.configure({ maxEntries: 50 });
    const old = await chain(range(0, 4 * 30));
    await idx.applyEvents(batch("p", 1, stored(old)));
    t += 10;
    const fresh = await chain(range(9000, 4 * 30));
    await idx.applyEvents(batch("p", 2, stored(fresh)));
    const s = await idx.stats();
    expect(s.entries).toBeLessThanOrEqual(50);
    expect((await idx.match(fresh)).p).toBe(30);
    expect(await idx.match(old)).toEqual({});
  });

  it("survives a restart of the object, options included", async () => {
    const idx = index("restart-model");
    const h = await chain(range(0, 24));
    await idx.configure({ approxTtlMs: 12_345 });
    await idx.applyEvents(batch("p", 1, stored(h)));
    await idx.applyEvents(batch("p", 2, evicted([h[5]])));
    await abortAllDurableObjects();
    const again = index("restart-model");
    expect(await again.match(h)).toEqual({ p: 5 });
    expect((await again.stats()).pods).toEqual([{ podId: "p", seq: 2, entries: 5 }]);
    expect(await again.applyEvents(batch("p", 2, evicted(h)))).toEqual({ applied: false, gap: false });
    expect((await again.configure({})).approxTtlMs).toBe(12_345);
  });

  it("rejects malformed hashes and options with a clear error, leaving the index as it was", async () => {
    const idx = index();
    const h = await chain(range(0, 8));
    await idx.applyEvents(batch("p", 1, stored(h)));
    expect((await rejection(() => idx.applyEvents(batch("p", 2, stored(["XYZ"]))))).message).toMatch(/32 lowercase hex.*"XYZ"/);
    expect((await rejection(() => idx.recordRoute("p", ["nothex"]))).message).toMatch(/32 lowercase hex/);
    expect((await rejection(() => idx.configure({ maxEntries: 0 }))).message).toMatch(/maxEntries.*got 0/);
    expect(await idx.match(h)).toEqual({ p: 2 });
    expect((await idx.stats()).pods[0].seq).toBe(1);
  });

  it("shards by model: another model's index is a different object", async () => {
    const h = await chain(range(0, 8));
    await index("model-a").applyEvents(batch("p", 1, stored(h)));
    expect(await index("model-b").match(h)).toEqual({});
    expect(await index("model-a").match(h)).toEqual({ p: 2 });
  });
});
