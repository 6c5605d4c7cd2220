/**
 * A scripted pod for the disconnect tests: a Node HTTP server speaking the pod protocol
 * (shared/spec/pod-protocol.md) to the real edge in wrangler dev. /v1/generate streams one
 * tokens record every `tokenMs` until max_tokens; /v1/cancel is recorded. It registers and
 * heartbeats like the real pod, and like a real pod started with the pod secret it answers only
 * requests carrying `Authorization: Bearer <DEV_POD_SECRET>` (a 401 `unauthorized` otherwise, not
 * recorded as a generate or cancel; the path goes to `refused`), so the tests that see its
 * generates and cancels prove the edge sends the secret. It stands only for the pod: what it
 * records (tokens written per request, cancels) is what the real pod could not report exactly.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { DEV_POD_SECRET, MODEL, type Edge } from "./stack";
import { freePort } from "./procs";

/** A plain word piece (not a special or end-of-text token): every record shows as text. */
export const TOKEN_ID = 330;

export interface GenerateSeen {
  requestId: string;
  maxTokens: number;
  /** Token records written to the edge's connection. */
  sent: number;
  /** True when the edge closed the connection before the final record. */
  closedEarly: boolean;
}

export interface FakePod {
  url: string;
  podId: string;
  generates: GenerateSeen[];
  cancels: string[];
  /** Paths of requests refused for a missing or wrong secret. */
  refused: string[];
  stop: () => Promise<void>;
}

async function body(req: IncomingMessage): Promise<any> {
  let text = "";
  for await (const chunk of req) text += chunk;
  return text ? JSON.parse(text) : {};
}

export async function startFakePod(edge: Edge, opts: { podId?: string; tokenMs?: number } = {}): Promise<FakePod> {
  const podId = opts.podId ?? "pod-fake";
  const tokenMs = opts.tokenMs ?? 25;
  const generates: GenerateSeen[] = [];
  const cancels: string[] = [];
  const refused: string[] = [];
  const server: Server = createServer(async (req, res) => {
    const b = await body(req);
    if (req.headers.authorization !== `Bearer ${DEV_POD_SECRET}`) {
      refused.push(req.url ?? "");
      const error = { code: "unauthorized", message: `${req.method} ${req.url} needs 'Authorization: Bearer <pod secret>'`, param: null };
      res.writeHead(401, { "content-type": "application/json", "www-authenticate": "Bearer" }).end(JSON.stringify({ type: "error", request_id: null, error }));
      return;
    }
    if (req.url === "/v1/cancel") {
      cancels.push(b.request_id);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ request_id: b.request_id, cancelled: true }));
      return;
    }
    if (req.url !== "/v1/generate") {
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
      return;
    }
    const seen: GenerateSeen = { requestId: b.request_id, maxTokens: b.max_tokens, sent: 0, closedEarly: false };
    generates.push(seen);
    let closed = false;
    res.on("close", () => {
      closed = true;
      if (!res.writableFinished) seen.closedEarly = true;
    });
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    for (let i = 0; i < b.max_tokens && !closed; i++) {
      res.write(JSON.stringify({ type: "tokens", request_id: b.request_id, token_ids: [TOKEN_ID], t_ms: [i * tokenMs] }) + "\n");
      seen.sent++;
      await new Promise((r) => setTimeout(r, tokenMs));
    }
    if (closed) return;
    const usage = { prompt_tokens: b.prompt_token_ids.length, completion_tokens: seen.sent, cached_tokens: 0 };
    res.end(JSON.stringify({ type: "final", request_id: b.request_id, finish_reason: "length", usage }) + "\n");
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  const url = `http://127.0.0.1:${port}`;
  const registration = {
    pod_id: podId,
    url,
    models: [MODEL],
    role: "both",
    block_size: 16,
    max_model_len: 8192,
    load: { running: 0, waiting: 0, free_blocks: 1000, total_blocks: 1000 },
  };
  const send = async (path: string) => {
    const r = await fetch(`${edge.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${DEV_POD_SECRET}`, "content-type": "application/json" },
      body: JSON.stringify(registration),
    });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  };
  await send("/internal/pods/register");
  const beat = setInterval(() => send("/internal/pods/heartbeat").catch(() => {}), 1000);
  return {
    url,
    podId,
    generates,
    cancels,
    refused,
    stop: async () => {
      clearInterval(beat);
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
