import { describe, expect, it } from "vitest";
import type { z } from "zod";
import cases from "../../../shared/vectors/protocol/cases.json";
import { KvEventBatch, MAX_BATCH_ROWS, overBound } from "./kv-events";

// The zod schema must agree with the shared JSON Schema on every KvEventBatch vector.
const vectors = (cases.cases as { def: string; name: string; valid: boolean; message: unknown }[]).filter((c) => c.def === "KvEventBatch");

describe("KvEventBatch zod schema vs the shared protocol vectors", () => {
  it("has vectors to check", () => expect(vectors.length).toBeGreaterThan(0));
  for (const c of vectors) {
    it(`${c.name} → ${c.valid ? "valid" : "invalid"}`, () => {
      expect(KvEventBatch.safeParse(c.message).success).toBe(c.valid);
    });
  }
});

describe("overBound", () => {
  const h = (i: number) => i.toString(16).padStart(32, "0");
  const hashes = (n: number) => Array.from({ length: n }, (_, i) => h(i));
  const batch = (events: z.output<typeof KvEventBatch>["events"]) => ({ pod_id: "p", model: "m", seq: 1, block_size: 16, events });

  it("counts hash rows over the shards each event reaches", () => {
    const rooted = { type: "stored" as const, block_hashes: hashes(MAX_BATCH_ROWS), root_hash: h(0) };
    expect(overBound(batch([rooted]), 4)).toBeUndefined();
    const rootless = { type: "stored" as const, block_hashes: hashes(MAX_BATCH_ROWS / 4 + 1) };
    expect(overBound(batch([rootless]), 1)).toBeUndefined();
    expect(overBound(batch([rootless]), 4)).toMatch(/65540 hash rows over 4 shard\(s\)/);
    expect(overBound(batch([rooted, { type: "evicted", block_hashes: [h(1)], root_hash: h(1) }]), 1)).toMatch(/65537 hash rows/);
  });

  it("bounds the events of a batch", () => {
    const cleared = { type: "cleared" as const, block_hashes: [] };
    expect(overBound(batch(Array.from({ length: 65_537 }, () => cleared)), 1)).toMatch(/65537 events/);
  });
});
