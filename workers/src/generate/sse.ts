/**
 * The streamed answer as OpenAI server-sent events: a role chunk (chat), content chunks, a
 * finish chunk, the usage chunk with `choices: []` when asked, then `data: [DONE]`. A failure
 * mid-answer becomes a `data: {"error": …}` event followed by `[DONE]`. The client going away
 * cancels the stream (and aborts the request's signal), which aborts the upstream request: the
 * backends clean up from their abort listeners (respond.ts).
 */
import { chunk, usageChunk, type AnswerMeta } from "../openai/responses";
import { midStreamError } from "./errors";
import type { TextEvent } from "./text-stream";

type End = Extract<TextEvent, { type: "final" | "error" }> | undefined;

export interface SseOptions {
  meta: AnswerMeta;
  first: TextEvent;
  rest: AsyncGenerator<TextEvent>;
  includeUsage: boolean;
  upstream: AbortController;
  onEnd: (ev: End) => void;
  /** Called when the client asks for more ("start") and once that chunk is queued ("end"). */
  onPull?: (phase: "start" | "end") => void;
}

const encoder = new TextEncoder();
const data = (obj: unknown) => encoder.encode(`data: ${JSON.stringify(obj)}\n\n`);
const DONE = encoder.encode("data: [DONE]\n\n");

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  connection: "keep-alive",
};

export function sseStream(o: SseOptions): ReadableStream<Uint8Array> {
  const { meta, includeUsage } = o;
  let pending: TextEvent | undefined = o.first;
  let started = false;
  let ended = false;
  const end = (ev: End) => {
    if (ended) return;
    ended = true;
    o.onEnd(ev);
  };

  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      o.onPull?.("start");
      try {
        if (!started) {
          started = true;
          if (meta.kind === "chat") controller.enqueue(data(chunk(meta, { role: "assistant", content: "" }, null, includeUsage)));
        }
        let ev = pending;
        pending = undefined;
        if (!ev) {
          const n = await o.rest.next();
          ev = n.done ? undefined : n.value;
        }
        if (ev?.type === "text") {
          controller.enqueue(data(chunk(meta, { content: ev.text }, null, includeUsage)));
          return;
        }
        if (ev?.type === "final") {
          controller.enqueue(data(chunk(meta, meta.kind === "chat" ? {} : { content: "" }, ev.finishReason, includeUsage)));
          if (includeUsage) controller.enqueue(data(usageChunk(meta, ev.usage)));
        } else {
          controller.enqueue(data({ error: midStreamError(ev) }));
        }
        controller.enqueue(DONE);
        controller.close();
        end(ev);
      } catch (e) {
        controller.enqueue(data({ error: { message: `edge failure mid-answer: ${(e as Error).message}`, type: "server_error", param: null, code: "internal_error" } }));
        controller.enqueue(DONE);
        controller.close();
        o.upstream.abort(e);
        end({ type: "error", code: "internal_error", message: String(e), retryable: false, produced: true });
      } finally {
        o.onPull?.("end");
      }
    },
    cancel() {
      // The client went away: aborting upstream frees the backend (WASM lock, pod cancel) from
      // its abort listeners; end() charges what was delivered. Closing the generator chain is
      // only tidiness: in workerd its pending awaits may never settle.
      o.upstream.abort(new Error("client disconnected"));
      end(undefined);
      o.rest.return(undefined).catch(() => {});
    },
  });

  return body;
}
