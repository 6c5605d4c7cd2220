/**
 * The edge's HTTP surface: the wiring only. Routes, middleware and the error handler live in
 * their own files; `createApp` takes the outbound fetch so fault-injection tests can put a pod
 * double behind it.
 */
import { Hono } from "hono";
import { loadConfig } from "./config";
import { ApiError, errorHandler, notFoundHandler } from "./errors";
import type { RespondDeps } from "./generate/respond";
import { apiKeyAuth, podSecretAuth } from "./middleware/auth";
import { requestContext } from "./middleware/request-id";
import { chatCompletions } from "./routes/chat";
import { completions } from "./routes/completions";
import { health } from "./routes/health";
import { heartbeatPod, registerPod } from "./routes/internal-pods";
import { kvEvents } from "./routing/kv-events";
import { getModel, listModels } from "./routes/models";
import type { AppEnv } from "./types";

/** Paths and the methods they answer; any other method on them is a 405. */
const ROUTES: Record<string, string[]> = {
  "/v1/chat/completions": ["POST"],
  "/v1/completions": ["POST"],
  "/v1/models": ["GET"],
  "/health": ["GET"],
  "/internal/pods/register": ["POST"],
  "/internal/pods/heartbeat": ["POST"],
  "/internal/kv-events": ["POST"],
};

export function createApp(deps: RespondDeps = {}) {
  const app = new Hono<AppEnv>();
  app.onError(errorHandler);
  app.notFound(notFoundHandler);

  app.use("*", requestContext);
  app.use("*", async (c, next) => {
    try {
      c.set("config", loadConfig(c.env));
    } catch (e) {
      throw new ApiError(500, (e as Error).message, { code: "misconfigured", cause: e });
    }
    await next();
  });
  app.use("*", async (c, next) => {
    const path = new URL(c.req.url).pathname;
    const allowed = ROUTES[path] ?? (path.startsWith("/v1/models/") ? ["GET"] : undefined);
    const method = c.req.method === "HEAD" ? "GET" : c.req.method;
    if (allowed && !allowed.includes(method)) {
      throw new ApiError(405, `Method ${c.req.method} is not allowed on ${path}; use ${allowed.join(", ")}.`, {
        code: "method_not_allowed",
        headers: { allow: allowed.join(", ") },
      });
    }
    await next();
  });

  app.get("/health", health);
  app.use("/v1/*", apiKeyAuth);
  app.post("/v1/chat/completions", chatCompletions(deps));
  app.post("/v1/completions", completions(deps));
  app.get("/v1/models", listModels);
  app.get("/v1/models/:id{.+}", getModel);
  app.use("/internal/*", podSecretAuth);
  app.post("/internal/pods/register", registerPod);
  app.post("/internal/pods/heartbeat", heartbeatPod);
  app.post("/internal/kv-events", kvEvents);
  return app;
}
