/**
 * From token ids to the HTTP answer, shared by chat and legacy completions: rate limit, route,
 * run with one retry, detokenize, then either an SSE stream or one JSON body. Nothing is sent
 * until the first output (or failure) arrives, so a request that fails before its first token
 * gets a proper HTTP error instead of a 200 with an error event.
 */
import type { Context } from "hono";
import type { SloTargets } from "@edgeserve/shared";
import type { BackendEvent, GenerateParams } from "../backends/types";
import { ApiError } from "../errors";
import { withFallback, type Attempt } from "../forward/with-fallback";
import { planRoute, type RouterDeps } from "../forward/router";
import type { PodInfo } from "../routing";
import type { ModelSpec } from "../models";
import { answerId, completion, type Kind } from "../openai/responses";
import type { Tokenizer } from "../tokenize";
import type { AppEnv } from "../types";
import { admit, chargeLater } from "./rate-limit";
import { stalledStreamMs, sweepStalled, track, type OpenAnswer } from "./orphans";
import { cancelLeftoverPodWork } from "../backends/pod";
import { SSE_HEADERS, sseStream } from "./sse";
import { textStream, type TextEvent } from "./text-stream";
import { backendErrorToApi } from "./errors";
import { sharedEstimator } from "../slo";

export interface Job {
  kind: Kind;
  spec: ModelSpec;
  tokenizer: Tokenizer;
  promptTokenIds: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stop: string[];
  /** Token ids that end the answer, hidden from the text (EOS; for chat also the turn marker). */
  stopTokenIds: readonly number[];
  /** Live pods serving the model (read by buildJob). */
  livePods: PodInfo[];
  /**
   * max_tokens the in-Worker runtime runs this request with (it fits the runtime's context), or
   * null: the runtime may not serve it (pods only).
   */
  localMaxTokens: number | null;
  stream: boolean;
  includeUsage: boolean;
  slo: SloTargets;
}

export interface RespondDeps {
  fetch?: typeof fetch;
}

export async function respond(c: Context<AppEnv>, job: Job, deps: RespondDeps = {}): Promise<Response> {
  const log = c.get("log");
  const requestId = c.get("requestId");
  const config = c.get("config");
  const waitUntil = (p: Promise<unknown>) => c.executionCtx.waitUntil(p);
  log.set({ model: job.spec.id, stream: job.stream, prompt_tokens: job.promptTokenIds.length });
  const fetchFn = deps.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));
  sweepStalled({ env: c.env, fetch: fetchFn, waitUntil }, stalledStreamMs(c.env));

  await admit(c, job.promptTokenIds.length);
  const pods = job.livePods;
  const routerDeps: RouterDeps = { env: c.env, config, fetch: deps.fetch, waitUntil };
  const plan = await planRoute(
    {
      requestId,
      spec: job.spec,
      promptTokenIds: job.promptTokenIds,
      maxTokens: job.maxTokens,
      slo: job.slo,
      localMaxTokens: job.localMaxTokens,
      estimate: (generated) => sharedEstimator.estimate(c.get("apiKey").name, job.spec.id, job.maxTokens, generated),
    },
    routerDeps,
    pods,
  );
  log.set({ route: plan.explain });
  c.header("x-edgeserve-route", plan.explain);
  if (plan.backends.length === 0) {
    throw new ApiError(503, `No backend can serve '${job.spec.id}' right now: no live pod serves it and the in-Worker runtime is not available.`, {
      code: "no_backend",
      headers: { "retry-after": "5" },
    });
  }

  const upstream = new AbortController();
  const clientSignal = c.req.raw.signal;
  // Cleanup is driven by abort events, never by a generator's finally: in workerd a request whose
  // client left never resumes its pending awaits, but its abort listeners run (and may waitUntil)
  // when workerd reports the disconnect (README: when it does not). Aborting `upstream` makes the
  // backends free the WASM lock and cancel pod work; `done` charges the tokens delivered so far.
  const onClientGone = () => {
    upstream.abort(new Error("client disconnected"));
    untrackAnswer();
    finish(undefined);
  };
  let untrackAnswer = () => {};
  clientSignal?.addEventListener("abort", onClientGone);
  const params: GenerateParams = {
    requestId,
    model: job.spec.id,
    promptTokenIds: job.promptTokenIds,
    maxTokens: job.maxTokens,
    temperature: job.temperature,
    topP: job.topP,
    topK: job.topK,
    seed: job.seed,
    stopTokenIds: [...job.stopTokenIds],
    signal: upstream.signal,
  };
  const attempts: Attempt[] = [];
  let firstTokenMs: number | undefined;
  // Tokens the backends produced for this request: what an answer that ends without a final
  // event (client gone, failure) is charged.
  let delivered = 0;
  const events = textStream(countTokens(withFallback(plan.backends, params, attempts), (n) => (delivered += n)), {
    decoder: job.tokenizer.newStreamDecoder(),
    stopTokenIds: job.stopTokenIds,
    stop: job.stop,
    promptTokens: job.promptTokenIds.length,
    onFirstToken: () => {
      firstTokenMs ??= log.elapsedMs();
      if (attempts.length === 1 && attempts[0].backend === plan.backends[0]) plan.observeFirstToken?.();
    },
  });
  let ended = false;
  /** Once per request, whichever comes first: the final event, a failure, or the client leaving. */
  // `charge`: completion tokens to charge when the answer ends without a final event (default:
  // all the backends produced; a non-streamed failure delivers nothing, so 0).
  const done = (ev: Extract<TextEvent, { type: "final" | "error" }> | undefined, charge = delivered) => {
    if (ended) return false;
    ended = true;
    clientSignal?.removeEventListener("abort", onClientGone);
    const used = attempts.at(-1)?.backend.id;
    log.set({ backend: used, retries: Math.max(0, attempts.length - 1), ttft_ms: firstTokenMs });
    if (ev?.type === "final") {
      log.set({ completion_tokens: ev.usage.completionTokens, cached_tokens: ev.usage.cachedTokens, finish_reason: ev.finishReason });
      if (ev.cutBy) log.set({ cut_by: ev.cutBy });
      chargeLater(c, ev.usage.completionTokens);
      sharedEstimator.observe(c.env.OUTPUT_LENGTHS, c.get("apiKey").name, job.spec.id, ev.usage.completionTokens, waitUntil);
    } else {
      log.set({ completion_tokens: charge });
      chargeLater(c, charge);
      if (ev?.type === "error") log.set({ error_code: ev.code, error: ev.message });
      else log.set({ finish_reason: "cancelled" });
    }
    return true;
  };
  // A streamed answer's log line is deferred until it ends (set below).
  let streaming = false;
  const finish = (ev: Parameters<typeof done>[0]) => {
    if (done(ev) && streaming) log.emit();
  };

  const first = await events.next();
  if (first.done || first.value.type === "error") {
    const ev = first.done ? undefined : (first.value as Extract<TextEvent, { type: "error" }>);
    done(ev);
    throw backendErrorToApi(ev, job.kind);
  }

  const meta = { kind: job.kind, id: answerId(job.kind, requestId), created: Math.floor(Date.now() / 1000), model: job.spec.id };
  if (job.stream) {
    log.defer();
    streaming = true;
    const keyName = c.get("apiKey").name;
    const answer: OpenAnswer = {
      lastReadMs: Date.now(),
      aliveMs: Date.now(),
      // From another request (orphans.ts): only that request's env, fetch and waitUntil.
      sweep: (ctx) => {
        if (ended) return;
        ended = true;
        const charge = ctx.env.RATE_LIMITER.get(ctx.env.RATE_LIMITER.idFromName(keyName)).charge(delivered);
        ctx.waitUntil(Promise.resolve(charge).catch(() => {}));
        cancelLeftoverPodWork(requestId, ctx.fetch, ctx.waitUntil);
        log.set({ completion_tokens: delivered, finish_reason: "cancelled", error_code: "client_stalled" });
        log.emit();
      },
    };
    const untrack = track(answer);
    untrackAnswer = untrack;
    const onEnd = (ev: Parameters<typeof done>[0]) => {
      untrack();
      finish(ev);
    };
    // While a read waits on the backend the client is not the one stalling.
    const onPull = (phase: "start" | "end") => (answer.lastReadMs = phase === "start" ? Number.POSITIVE_INFINITY : Date.now());
    return c.body(sseStream({ meta, first: first.value, rest: events, includeUsage: job.includeUsage, upstream, onEnd, onPull }), 200, SSE_HEADERS);
  }

  let text = "";
  let ev: TextEvent = first.value;
  for (;;) {
    if (ev.type === "text") text += ev.text;
    else break;
    const n = await events.next();
    if (n.done) break;
    ev = n.value;
  }
  if (ev.type !== "final") {
    // The text so far is thrown away with the error: none of it is charged.
    done(ev.type === "error" ? ev : undefined, 0);
    throw backendErrorToApi(ev.type === "error" ? ev : undefined, job.kind);
  }
  done(ev);
  return c.json(completion(meta, text, ev.finishReason, ev.usage));
}

async function* countTokens(events: AsyncIterable<BackendEvent>, count: (n: number) => void): AsyncGenerator<BackendEvent> {
  for await (const ev of events) {
    if (ev.type === "tokens") count(ev.tokenIds.length);
    yield ev;
  }
}
