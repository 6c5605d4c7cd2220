import { ApiError } from "../errors";
import { MODELS, type ModelSpec } from "./catalog";

export * from "./catalog";

const byId = new Map(MODELS.map((m) => [m.id, m]));

/** The catalog entry for `id`, or a 404 naming the `model` field. */
export function resolveModel(id: string): ModelSpec {
  const spec = byId.get(id);
  if (!spec) {
    throw new ApiError(404, `The model '${id}' does not exist or you do not have access to it.`, {
      param: "model",
      code: "model_not_found",
    });
  }
  return spec;
}
