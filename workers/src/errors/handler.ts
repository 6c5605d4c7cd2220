/**
 * The single place where failures become responses. `ApiError`s keep their status and shape; any
 * other exception is a bug and becomes a 500 whose message hides internals.
 */
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError } from "./api-error";
import type { AppEnv } from "../types";

export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HTTPException) {
    // Hono's own middleware (e.g. body limit) throws plain HTTPExceptions.
    const status = err.status;
    const code = status === 413 ? "request_too_large" : null;
    return new ApiError(status, err.message || "request rejected", { code, cause: err });
  }
  return new ApiError(500, "internal error in the edge; the request id identifies it in the logs", {
    code: "internal_error",
    cause: err,
  });
}

export const errorHandler: ErrorHandler<AppEnv> = (err, c: Context<AppEnv>) => {
  const apiError = toApiError(err);
  if (apiError.status >= 500 && !(err instanceof ApiError)) {
    c.get("log")?.set({ error: String(err instanceof Error ? (err.stack ?? err.message) : err) });
  }
  c.get("log")?.set({ error_code: apiError.code ?? apiError.type });
  return apiError.getResponse();
};

export const notFoundHandler: NotFoundHandler<AppEnv> = (c) => {
  c.get("log")?.set({ error_code: "unknown_url" });
  return new ApiError(404, `Invalid URL (${c.req.method} ${new URL(c.req.url).pathname})`, {
    code: "unknown_url",
  }).getResponse();
};
