/** GET /v1/models and GET /v1/models/:id, from the catalog. */
import type { Context } from "hono";
import { MODELS, resolveModel, type ModelSpec } from "../models";
import type { AppEnv } from "../types";

const toObject = (m: ModelSpec) => ({ id: m.id, object: "model", created: m.created, owned_by: m.ownedBy });

export const listModels = (c: Context<AppEnv>) => c.json({ object: "list", data: MODELS.map(toObject) });

export const getModel = (c: Context<AppEnv>) => c.json(toObject(resolveModel(c.req.param("id") ?? "")));
