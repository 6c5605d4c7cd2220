/**
 * Request id and log line: takes a well-formed `x-request-id` from the client or makes one, echoes
 * it on every response, and emits the request's log line when the handler is done (unless the
 * response is a stream, which emits it at its end).
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../types";
import { RequestLog } from "./request-log";

// The pod protocol's RequestId pattern, so a client-chosen id can be forwarded as is.
const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export function newRequestId(): string {
  return `req-${crypto.randomUUID().replaceAll("-", "")}`;
}

export const requestContext: MiddlewareHandler<AppEnv> = async (c, next) => {
  const given = c.req.header("x-request-id");
  const requestId = given && ID_PATTERN.test(given) ? given : newRequestId();
  const log = new RequestLog();
  log.set({ request_id: requestId, method: c.req.method, path: new URL(c.req.url).pathname });
  c.set("requestId", requestId);
  c.set("log", log);
  try {
    await next();
  } finally {
    c.header("x-request-id", requestId);
    log.set({ status: c.res.status });
    if (!log.isDeferred) log.emit();
  }
};
