/**
 * GET /v1/models and GET /v1/models/:id, from the catalog. `max_model_len` (vLLM's field) is the
 * model's context on this deployment (generate/context.ts): the catalog's when pods serve it,
 * the in-Worker runtime's when only the runtime does.
 */
import type { Context } from "hono";
import { registryStub } from "../forward/router";
import { deploymentContext, modelContexts } from "../generate/context";
import { MODELS, resolveModel, type ModelSpec } from "../models";
import type { AppEnv } from "../types";

async function toObject(c: Context<AppEnv>, m: ModelSpec) {
  const podsKnown = m.backends.includes("pod") && (await registryStub(c.env).podsServing(m.id)).known > 0;
  return { id: m.id, object: "model", created: m.created, owned_by: m.ownedBy, max_model_len: deploymentContext(modelContexts(c.env, m), podsKnown, m) };
}

export const listModels = async (c: Context<AppEnv>) => c.json({ object: "list", data: await Promise.all(MODELS.map((m) => toObject(c, m))) });

export const getModel = async (c: Context<AppEnv>) => c.json(await toObject(c, resolveModel(c.req.param("id") ?? "")));
