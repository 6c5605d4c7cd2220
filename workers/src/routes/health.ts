/** GET /health: the edge is up; how many pods are live per model; whether the local runtime exists. */
import type { Context } from "hono";
import { localRuntime } from "../backends/local-runtime";
import { registryStub } from "../forward/router";
import { MODELS } from "../models";
import type { AppEnv } from "../types";

export const health = async (c: Context<AppEnv>) => {
  const live = await registryStub(c.env).livePods();
  const models = Object.fromEntries(
    MODELS.map((m) => [
      m.id,
      {
        live_pods: live.filter((p) => p.models.includes(m.id)).map((p) => p.podId),
        wasm: m.backends.includes("wasm") && localRuntime !== null,
      },
    ]),
  );
  return c.json({ status: "ok", models });
};
