/**
 * Bearer API keys. The configured keys are indexed by their SHA-256 so that a lookup does not
 * compare secrets byte by byte. A missing or unknown key is a 401 in the OpenAI error shape.
 */
import type { MiddlewareHandler } from "hono";
import type { ApiKeyEntry } from "../config";
import { ApiError } from "../errors";
import type { AppEnv } from "../types";

const encoder = new TextEncoder();

async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  let s = "";
  for (const b of digest) s += b.toString(16).padStart(2, "0");
  return s;
}

let index: { keys: ApiKeyEntry[]; byHash: Map<string, ApiKeyEntry> } | undefined;

async function keyIndex(keys: ApiKeyEntry[]): Promise<Map<string, ApiKeyEntry>> {
  if (index?.keys === keys) return index.byHash;
  const byHash = new Map<string, ApiKeyEntry>();
  for (const k of keys) byHash.set(await sha256Hex(k.key), k);
  index = { keys, byHash };
  return byHash;
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
  return m ? m[1] : null;
}

const unauthorized = (message: string) =>
  new ApiError(401, message, {
    code: "invalid_api_key",
    type: "authentication_error",
    headers: { "www-authenticate": 'Bearer realm="edgeserve"' },
  });

export const apiKeyAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  const header = c.req.header("authorization");
  if (!header) {
    throw unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.");
  }
  const token = bearerToken(header);
  if (!token) throw unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.");
  const entry = (await keyIndex(c.get("config").apiKeys)).get(await sha256Hex(token));
  if (!entry) throw unauthorized("Incorrect API key provided.");
  c.set("apiKey", entry);
  c.get("log").set({ key: entry.name });
  await next();
};

/** Pods authenticate with the shared pod secret on /internal/*. */
export const podSecretAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  const secret = c.get("config").podSecret;
  if (!token || (await sha256Hex(token)) !== (await sha256Hex(secret))) {
    throw unauthorized("Pod endpoints need 'Authorization: Bearer <POD_SECRET>'.");
  }
  await next();
};
