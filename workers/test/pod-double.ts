/**
 * An in-process pod double for the fault-injection tests only: it answers the pod protocol's
 * /v1/generate and /v1/cancel per pod host, with scripted records, delays, hangs and failures,
 * and records what the edge sent. Everything else in these tests is the real edge. Like a real
 * pod with a pod secret, it answers only requests that carry `Authorization: Bearer <secret>` (the
 * tests' POD_SECRET unless `secrets` gives a host another one): others get a 401 ErrorRecord
 * `unauthorized` and reach no behaviour.
 */
import type { GenerateRequest } from "@edgeserve/shared";
import { POD_SECRET } from "./helpers";

export type Step =
  | { tokens: number[]; delayMs?: number }
  | { final: "stop" | "length"; completionTokens?: number; cachedTokens?: number; delayMs?: number }
  | { error: string; message?: string; delayMs?: number }
  | { raw: string; delayMs?: number }
  /** Stop sending but keep the stream open until the edge aborts it. */
  | { hang: true };

export type Behaviour =
  | { steps: Step[] }
  | { status: number; body?: unknown }
  | { throws: string }
  /** Never answers (until aborted). */
  | { silent: true };

export interface GenerateCall {
  host: string;
  body: GenerateRequest;
  aborted: () => boolean;
  /** False when the pod refused the call's credentials (401). */
  authorized: boolean;
}

export interface PodDoubleOptions {
  /** Pod host → the secret that pod was started with (others: the tests' POD_SECRET). */
  secrets?: Record<string, string>;
}

const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class PodDouble {
  readonly generateCalls: GenerateCall[] = [];
  readonly cancels: { host: string; requestId: string; authorized: boolean }[] = [];

  constructor(
    private readonly behaviours: Record<string, Behaviour>,
    private readonly opts: PodDoubleOptions = {},
  ) {}

  readonly fetch: typeof fetch = async (input, init) => {
    const req = new Request(input as RequestInfo, init);
    const url = new URL(req.url);
    const signal = init?.signal ?? undefined;
    const authorized = req.headers.get("authorization") === `Bearer ${this.opts.secrets?.[url.host] ?? POD_SECRET}`;
    const refuse = () =>
      Response.json(
        { type: "error", request_id: null, error: { code: "unauthorized", message: `${req.method} ${url.pathname} needs 'Authorization: Bearer <pod secret>'`, param: null } },
        { status: 401, headers: { "www-authenticate": "Bearer" } },
      );
    if (url.pathname === "/v1/cancel") {
      const body = (await req.json()) as { request_id: string };
      this.cancels.push({ host: url.host, requestId: body.request_id, authorized });
      return authorized ? Response.json({ request_id: body.request_id, cancelled: true }) : refuse();
    }
    if (url.pathname !== "/v1/generate") return new Response("not found", { status: 404 });
    const body = (await req.json()) as GenerateRequest;
    const call: GenerateCall = { host: url.host, body, aborted: () => signal?.aborted ?? false, authorized };
    this.generateCalls.push(call);
    if (!authorized) return refuse();
    const b = this.behaviours[url.host];
    if (!b) throw new TypeError(`connect ECONNREFUSED ${url.host}`);
    if ("throws" in b) throw new TypeError(b.throws);
    if ("silent" in b) {
      await new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
    }
    if ("status" in b) return Response.json(b.body ?? { error: "x" }, { status: b.status });
    return new Response(stream(body, (b as { steps: Step[] }).steps, signal), {
      headers: { "content-type": "application/x-ndjson" },
    });
  };

  /** True when the pod took a cancel for `requestId` (one with the right secret). */
  cancelled(requestId: string): boolean {
    return this.cancels.some((c) => c.requestId === requestId && c.authorized);
  }
}

function stream(req: GenerateRequest, steps: Step[], signal?: AbortSignal | null): ReadableStream<Uint8Array> {
  let produced = 0;
  let t = 0;
  return new ReadableStream<Uint8Array>({
    async start(controller) {
      try {
        for (const s of steps) {
          if ("hang" in s) {
            await new Promise((resolve) => signal?.addEventListener("abort", resolve));
            return;
          }
          if (s.delayMs) await sleep(s.delayMs);
          if (signal?.aborted) return;
          let rec: unknown;
          if ("tokens" in s) {
            produced += s.tokens.length;
            rec = { type: "tokens", request_id: req.request_id, token_ids: s.tokens, t_ms: s.tokens.map(() => ++t) };
          } else if ("final" in s) {
            rec = {
              type: "final",
              request_id: req.request_id,
              finish_reason: s.final,
              usage: { prompt_tokens: req.prompt_token_ids.length, completion_tokens: s.completionTokens ?? produced, cached_tokens: s.cachedTokens ?? 0 },
            };
          } else if ("error" in s) {
            rec = { type: "error", request_id: req.request_id, error: { code: s.error, message: s.message ?? "scripted failure" } };
          } else {
            controller.enqueue(encoder.encode(s.raw));
            continue;
          }
          controller.enqueue(encoder.encode(JSON.stringify(rec) + "\n"));
        }
        controller.close();
      } catch {
        // The edge cancelled the stream.
      }
    },
  });
}

/** One token per record, then a final: the common happy script. */
export function tokenSteps(ids: number[], finish: "stop" | "length" = "stop", delayMs = 0): Step[] {
  return [...ids.map((id) => ({ tokens: [id], delayMs })), { final: finish }];
}
