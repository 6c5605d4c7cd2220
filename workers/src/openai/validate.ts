/**
 * The request boundary: reads the body (size, UTF-8, JSON) and validates it with a zod schema.
 * Every failure is an `ApiError` 4xx whose `param` names the offending field.
 */
import type { Context } from "hono";
import type { z } from "zod";
import { ApiError, badRequest } from "../errors";
import type { AppEnv } from "../types";

/** `messages[0].content` from zod's `["messages", 0, "content"]`. */
export function paramPath(path: ReadonlyArray<string | number>): string | null {
  let s = "";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : s === "" ? p : `.${p}`;
  return s === "" ? null : s;
}

/** Of a union's failed branches, the issue that got furthest into the value explains it best. */
function deepestIssue(issue: z.ZodIssue): z.ZodIssue {
  if (issue.code !== "invalid_union") return issue;
  let best: z.ZodIssue = issue;
  let bestDepth = -1;
  for (const branch of issue.unionErrors) {
    for (const sub of branch.issues) {
      const d = deepestIssue(sub);
      // A type mismatch at the union's own path says less than a deeper or a non-type issue.
      const depth = d.path.length * 2 + (d.code === "invalid_type" ? 0 : 1);
      if (depth > bestDepth) {
        best = d;
        bestDepth = depth;
      }
    }
  }
  return best;
}

export function zodToApiError(error: z.ZodError): ApiError {
  const issue = deepestIssue(error.issues[0]);
  if (issue.code === "unrecognized_keys") {
    const param = paramPath([...issue.path, issue.keys[0]]);
    return badRequest(`Unrecognized request argument supplied: ${param}`, param, "unknown_parameter");
  }
  const param = paramPath(issue.path);
  const code =
    issue.code === "custom" && typeof issue.params?.code === "string"
      ? (issue.params.code as string)
      : issue.code === "invalid_type" && issue.received === "undefined"
        ? "missing_required_parameter"
        : "invalid_value";
  const message = issue.code === "invalid_type" && issue.received === "undefined"
    ? `Missing required parameter: '${param}'.`
    : `Invalid '${param ?? "body"}': ${issue.message}`;
  return badRequest(message, param, code);
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** Reads and parses a JSON body, refusing wrong content types, oversize bodies and broken UTF-8. */
export async function readJson(c: Context<AppEnv>, maxBytes: number): Promise<unknown> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\b/i.test(type.trim())) {
    throw new ApiError(415, `Content-Type must be application/json, got '${type || "(none)"}'.`, { code: "unsupported_media_type" });
  }
  const declared = Number(c.req.header("content-length") ?? "NaN");
  const tooLarge = () => new ApiError(413, `Request body exceeds ${maxBytes} bytes.`, { code: "request_too_large" });
  if (declared > maxBytes) throw tooLarge();
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.byteLength > maxBytes) throw tooLarge();
  if (bytes.byteLength === 0) throw badRequest("The request body is empty; expected a JSON object.", null, "invalid_json");
  let textBody: string;
  try {
    textBody = decoder.decode(bytes);
  } catch {
    throw badRequest("The request body is not valid UTF-8.", null, "invalid_encoding");
  }
  let value: unknown;
  try {
    value = JSON.parse(textBody);
  } catch (e) {
    throw badRequest(`We could not parse the JSON body of your request: ${(e as Error).message}`, null, "invalid_json");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest("The request body must be a JSON object.", null, "invalid_json");
  }
  return value;
}

export async function parseBody<S extends z.ZodTypeAny>(c: Context<AppEnv>, schema: S): Promise<z.infer<S>> {
  const value = await readJson(c, c.get("config").maxBodyBytes);
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw zodToApiError(parsed.error);
  return parsed.data;
}
