/**
 * Request id and log line. Every request gets a fresh id, which is what the pods see (so two
 * clients can never share, or cancel, each other's pod request). A well-formed client
 * `x-request-id` is echoed back and logged beside it; otherwise the fresh id is echoed. The
 * request's log line is emitted when the handler is done, or at the end of a streamed answer.
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
  const clientId = given && ID_PATTERN.test(given) ? given : undefined;
  const requestId = newRequestId();
  const log = new RequestLog();
  log.set({ request_id: requestId, client_request_id: clientId, method: c.req.method, path: new URL(c.req.url).pathname });
  c.set("requestId", requestId);
  c.set("log", log);
  try {
    await next();
  } finally {
    c.header("x-request-id", clientId ?? requestId);
    log.set({ status: c.res.status });
    if (!log.isDeferred) log.emit();
  }
};
