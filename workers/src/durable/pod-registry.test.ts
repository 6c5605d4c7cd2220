import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { PodRegistration } from "@edgeserve/shared";
import { describe, expect, it } from "vitest";
import { FORGET_AFTER_MS, PodRegistry } from "./pod-registry";

let n = 0;
const fresh = () => env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName(`reg-test-${++n}`));
const reg = (id: string, models: [string, ...string[]] = ["m"]): PodRegistration => ({
  pod_id: id,
  url: `http://${id}.test/`,
  models,
  role: "both",
  block_size: 16,
  load: { running: 1, waiting: 0, free_blocks: 5, total_blocks: 10 },
});

describe("PodRegistry", () => {
  it("lists a registered pod as live, per model, with its url normalised", async () => {
    const stub = fresh();
    const now = Date.now();
    expect(await stub.upsert(reg("a"), now)).toEqual({ heartbeatMs: 2000, known: false });
    expect(await stub.upsert(reg("b", ["other"]), now)).toMatchObject({ known: false });
    const live = await stub.livePods("m", now);
    expect(live.map((p) => p.podId)).toEqual(["a"]);
    expect(live[0]).toMatchObject({ url: "http://a.test", blockSize: 16, role: "both", load: { running: 1 } });
    expect((await stub.livePods(undefined, now)).length).toBe(2);
  });

  it("a heartbeat refreshes load and liveness; three missed beats make a pod stale", async () => {
    const stub = fresh();
    const t0 = Date.now();
    await stub.upsert(reg("a"), t0);
    expect(await stub.livePods("m", t0 + 3 * 2000)).toHaveLength(1);
    expect(await stub.livePods("m", t0 + 3 * 2000 + 1)).toHaveLength(0);
    const beat = { ...reg("a"), load: { ...reg("a").load, running: 7 } };
    expect(await stub.upsert(beat, t0 + 7000)).toMatchObject({ known: true });
    const live = await stub.livePods("m", t0 + 7001);
    expect(live[0].load.running).toBe(7);
  });

  it("keeps pods in SQLite, and its alarm forgets long-gone pods", async () => {
    const stub = fresh();
    const old = Date.now() - FORGET_AFTER_MS - 1000;
    await stub.upsert(reg("gone"), old);
    await stub.upsert(reg("here"), Date.now());
    await runInDurableObject(stub, async (r: PodRegistry, state) => {
      const rows = state.storage.sql.exec("SELECT pod_id FROM pods ORDER BY pod_id").toArray();
      expect(rows.map((x) => x.pod_id)).toEqual(["gone", "here"]);
      expect(r.allPods()).toHaveLength(2);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await stub.allPods()).map((p) => p.podId)).toEqual(["here"]);
  });
});
