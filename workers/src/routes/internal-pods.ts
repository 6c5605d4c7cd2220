/** The edge endpoints pods call (shared/spec/pod-protocol.md): register and heartbeat. */
import type { Context } from "hono";
import { registryStub } from "../forward/router";
import { parseBody } from "../openai/validate";
import { RegistrationAtEdge } from "../pods/registration-schema";
import type { AppEnv } from "../types";

export const registerPod = async (c: Context<AppEnv>) => {
  const reg = await parseBody(c, RegistrationAtEdge);
  const { heartbeatMs } = await registryStub(c.env).upsert(reg);
  return c.json({ ok: true, heartbeat_ms: heartbeatMs });
};

export const heartbeatPod = async (c: Context<AppEnv>) => {
  const reg = await parseBody(c, RegistrationAtEdge);
  await registryStub(c.env).upsert(reg);
  return c.json({ ok: true });
};
