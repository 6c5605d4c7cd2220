/** Shared by the workerd tests: keys, request builders, the tokenizer seeded into R2. */
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import tokenizerData from "../../.cache/tokenizers/smollm2-135m-instruct.json";
import { DEFAULT_MODEL } from "../src/models";

export const MODEL = DEFAULT_MODEL;
export const KEY = "sk-test-main-0000";
export const TINY_KEY = "sk-test-tiny-0000";
export const TOKENS_KEY = "sk-test-tokens-00";
export const POD_SECRET = "test-pod-secret";
export { tokenizerData };

export async function seedTokenizer(): Promise<void> {
  await env.MODELS.put(`tokenizers/${MODEL}.json`, JSON.stringify(tokenizerData));
}

export function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return exports.default.fetch(
    new Request(`http://edge${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", ...headers },
      body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
    }),
  );
}

export function get(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return exports.default.fetch(new Request(`http://edge${path}`, { headers: { authorization: `Bearer ${KEY}`, ...headers } }));
}

/** Asserts the OpenAI error shape and returns the error object. */
export async function expectError(res: Response, status: number, param?: string | null) {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  const body = JSON.parse(text);
  expect(Object.keys(body)).toEqual(["error"]);
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(typeof body.error.type).toBe("string");
  if (param !== undefined) expect(body.error.param).toBe(param);
  expect(res.headers.get("x-request-id")).toMatch(/^[A-Za-z0-9._:-]+$/);
  return body.error as { message: string; type: string; param: string | null; code: string | null };
}

export function registration(podId: string, url: string, load: Partial<{ running: number; waiting: number }> = {}) {
  return {
    pod_id: podId,
    url,
    models: [MODEL],
    role: "both",
    block_size: 16,
    max_model_len: 8192,
    load: { running: 0, waiting: 0, free_blocks: 100, total_blocks: 100, ...load },
  };
}

/** Forgets every registered pod (the registry is shared by the tests of a file). */
export async function resetPods(): Promise<void> {
  const stub = env.POD_REGISTRY.get(env.POD_REGISTRY.idFromName("global"));
  for (const p of await stub.allPods()) await stub.remove(p.podId);
}

export async function registerPod(podId: string, url: string, load: Partial<{ running: number; waiting: number }> = {}): Promise<void> {
  const res = await exports.default.fetch(
    new Request("http://edge/internal/pods/register", {
      method: "POST",
      headers: { authorization: `Bearer ${POD_SECRET}`, "content-type": "application/json" },
      body: JSON.stringify(registration(podId, url, load)),
    }),
  );
  expect(res.status).toBe(200);
}

/** Parses an SSE body into its data payloads (`[DONE]` kept as the string). */
export async function sseEvents(res: Response): Promise<unknown[]> {
  const text = await res.text();
  const out: unknown[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    expect(block.startsWith("data: "), block).toBe(true);
    const payload = block.slice("data: ".length);
    out.push(payload === "[DONE]" ? payload : JSON.parse(payload));
  }
  return out;
}
