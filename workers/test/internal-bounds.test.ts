/**
 * The /internal endpoints pods call, at their bounds (A3 items 6, 7): registrations list at most
 * 64 models, all from the catalog; KV event batches name a catalog model, and one too large to
 * apply counts as lost events instead of seconds of index writes; a pod the registry forgets
 * leaves the prefix index too.
 */
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { FORGET_AFTER_MS } from "../src/durable/pod-registry";
import { prefixIndexStub } from "../src/durable/prefix-index";
import { REGISTRY_NAME } from "../src/durable/pod-registry";
import { indexShards } from "../src/routing/prefix-lookup";
import { expectError, MODEL, POD_SECRET, post, registration, resetPods, seedTokenizer } from "./helpers";

beforeAll(seedTokenizer);

const asPod = { authorization: `Bearer ${POD_SECRET}` };
const h = (i: number) => i.toString(16).padStart(32, "0");

describe("pod registration bounds", () => {
  it("refuses a model outside the catalog, naming it", async () => {
    for (const path of ["/internal/pods/register", "/internal/pods/heartbeat"]) {
      const res = await post(path, { ...registration("pod-nc", "http://10.0.0.1:9"), models: [MODEL, "gpt-9"] }, asPod);
      const e = await expectError(res, 400, "models[1]");
      expect(e.code).toBe("model_not_found");
      expect(e.message).toMatch(/'gpt-9' is not in this edge's catalog/);
    }
  });

  it("refuses more than 64 models with a 400 (24 000 ids were a 500 under wrangler dev, A3)", async () => {
    const many = Array.from({ length: 24_000 }, (_, i) => `model-${i}`);
    const res = await post("/internal/pods/register", { ...registration("pod-many", "http://10.0.0.1:9"), models: many }, asPod);
    expect((await expectError(res, 400, "models")).code).toBe("invalid_value");
    const sixtyFive = Array.from({ length: 65 }, () => MODEL);
    await expectError(await post("/internal/pods/register", { ...registration("pod-65", "http://10.0.0.1:9"), models: sixtyFive }, asPod), 400, "models");
    const ok = await post("/internal/pods/register", { ...registration("pod-64", "http://10.0.0.1:9"), models: sixtyFive.slice(1) }, asPod);
    expect(ok.status).toBe(200);
    await resetPods();
  });
});

describe("KV event batch bounds", () => {
  it("refuses a model outside the catalog (it would create index objects for any name)", async () => {
    const res = await post("/internal/kv-events", { pod_id: "p", model: "no-such-model", seq: 1, block_size: 16, events: [] }, asPod);
    expect((await expectError(res, 400, "model")).code).toBe("model_not_found");
  });

  it("does not apply a batch over the bound: its seq counts, its events are lost, the pod's rows are demoted", async () => {
    const pod = "pod-big-batch";
    const shards = indexShards(env);
    // A chain whose root falls in shard 0, stored precisely.
    const root = h(0);
    const first = await post("/internal/kv-events", { pod_id: pod, model: MODEL, seq: 1, block_size: 16, events: [{ type: "stored", block_hashes: [root, h(1)], parent_hash: null, root_hash: root }] }, asPod);
    expect(await first.json()).toEqual({ ok: true, applied: true, gap: false });
    const shard0 = prefixIndexStub(env.PREFIX_INDEX, MODEL, 0);
    expect(await shard0.match([root, h(1)], true)).toEqual({ [pod]: 2 });
    // 20 000 hashes without root_hash reach every shard: 80 000 rows with 4 shards.
    const big = Array.from({ length: 20_000 }, (_, i) => h(1_000_000 + i));
    const res = await post("/internal/kv-events", { pod_id: pod, model: MODEL, seq: 2, block_size: 16, events: [{ type: "stored", block_hashes: big, parent_hash: null }] }, asPod);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ok: boolean; applied: boolean; gap: boolean; dropped?: string };
    expect(body).toMatchObject({ ok: true, applied: false, gap: true });
    expect(body.dropped).toMatch(new RegExp(`${20_000 * shards} hash rows over ${shards} shard`));
    for (let s = 0; s < shards; s++) {
      const stats = await prefixIndexStub(env.PREFIX_INDEX, MODEL, s).stats();
      const row = stats.pods.find((p) => p.podId === pod);
      expect(row?.seq).toBe(2);
      // none of the dropped hashes were written
      expect(row?.entries ?? 0).toBe(s === 0 ? 2 : 0);
    }
    // demoted: still matched as approximate, no longer precise
    expect(await shard0.match([root, h(1)], true)).toEqual({});
    expect(await shard0.match([root, h(1)])).toEqual({ [pod]: 2 });
    // the next batch follows without a gap
    const next = await post("/internal/kv-events", { pod_id: pod, model: MODEL, seq: 3, block_size: 16, events: [] }, asPod);
    expect(await next.json()).toEqual({ ok: true, applied: true, gap: false });
  });
});

describe("forgotten pods leave the prefix index", () => {
  it("PodRegistry's alarm drops a pod it forgets from every shard of its models", async () => {
    const shards = indexShards(env);
    const registry = env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName(REGISTRY_NAME));
    const reg = (id: string) => ({ ...registration(id, `http://${id}.test`), models: [MODEL] as [string] });
    await registry.upsert(reg("pod-gone"), Date.now() - FORGET_AFTER_MS - 1000);
    await registry.upsert(reg("pod-here"), Date.now());
    for (let s = 0; s < shards; s++) {
      const shard = prefixIndexStub(env.PREFIX_INDEX, MODEL, s);
      for (const pod of ["pod-gone", "pod-here"]) {
        await shard.applyEvents({ pod_id: pod, model: MODEL, seq: 1, block_size: 16, events: [{ type: "stored", block_hashes: [h(500 + s)], parent_hash: null }] });
      }
    }
    expect(await runDurableObjectAlarm(registry)).toBe(true);
    expect((await registry.allPods()).map((p) => p.podId)).not.toContain("pod-gone");
    for (let s = 0; s < shards; s++) {
      const stats = await prefixIndexStub(env.PREFIX_INDEX, MODEL, s).stats();
      expect(stats.pods.map((p) => p.podId)).not.toContain("pod-gone");
      expect(stats.pods.find((p) => p.podId === "pod-here")?.entries).toBe(1);
    }
    await resetPods();
  });
});
