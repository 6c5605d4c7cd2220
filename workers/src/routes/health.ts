/**
 * GET /health: the edge is up; how many pods are live per model; whether the local runtime
 * exists; each backend's context length.
 */
import type { Context } from "hono";
import { localRuntime } from "../backends/local-runtime";
import { registryStub } from "../forward/router";
import { modelContexts } from "../generate/context";
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
        // Prompt + completion each backend holds (generate/context.ts); null: not served that way.
        context_length: (({ pod, wasm }) => ({ pod, wasm }))(modelContexts(c.env, m)),
      },
    ]),
  );
  return c.json({ status: "ok", models });
};
