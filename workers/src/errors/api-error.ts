/**
 * The one exception type of the edge. Anything that should reach the client as an OpenAI-shaped
 * error is thrown as an `ApiError`; `errorHandler` turns it into the response.
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "rate_limit_error"
  | "not_found_error"
  | "server_error"
  | "service_unavailable";

export interface ApiErrorOptions {
  type?: ErrorType;
  param?: string | null;
  code?: string | null;
  headers?: Record<string, string>;
  cause?: unknown;
}

/** The body every failure has: `{"error": {message, type, param, code}}`. */
export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

const defaultType = (status: number): ErrorType =>
  status === 401
    ? "authentication_error"
    : status === 429
      ? "rate_limit_error"
      : status === 503
        ? "service_unavailable"
        : status >= 500
          ? "server_error"
          : "invalid_request_error";

export class ApiError extends HTTPException {
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(status: ContentfulStatusCode, message: string, options: ApiErrorOptions = {}) {
    super(status, { message, cause: options.cause });
    this.type = options.type ?? defaultType(status);
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  toBody(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  override getResponse(): Response {
    return Response.json(this.toBody(), {
      status: this.status,
      headers: { "cache-control": "no-store", ...this.headers },
    });
  }
}

/** Shorthands for the common cases. */
export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, { param, code });
