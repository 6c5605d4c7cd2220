/**
 * The wllama peer for bench/wasm_bench.mjs: @wllama/wllama (llama.cpp compiled to WASM, memory64
 * + JSPI build) single-threaded inside workerd, the same runtime and isolate type as ours.
 * wllama runs its engine in a Web Worker made from a Blob URL; workerd has neither, so
 * InProcessWorker runs the same worker code (bench/wasm/wllama-glue.mjs) in this isolate and
 * passes the messages asynchronously, as a Worker would.
 *   GET /load?key=       load the GGUF from R2 (n_threads 1, CPU only)
 *   GET /run?prompt=&n=  one completion: a `prompt`-token text prompt (" the" repeated: one
 *                        token each in SmolLM2's vocabulary; wllama takes text, not ids), then
 *                        n greedy tokens (EOS ignored); returns llama.cpp's own timings
 *                        (prompt_n, prompt_ms, predicted_n, predicted_ms)
 */
// @ts-ignore: a CompiledWasm module (external in the bundle)
import wllamaModule from "../../node_modules/@wllama/wllama/esm/wasm/wllama.wasm";
// @ts-ignore: generated at bundle time (alias set by bench/wasm_bench.mjs)
import { createWllamaScope, LIBLLAMA_VERSION, WLLAMA_VERSION } from "wllama-glue";
import { Wllama } from "@wllama/wllama";

interface Env { MODELS: R2Bucket }

class InProcessWorker {
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  private scope: { onmessage: (e: { data: unknown }) => Promise<void> };
  constructor() {
    this.scope = createWllamaScope((data: unknown) => queueMicrotask(() => this.onmessage?.({ data })), wllamaModule);
  }
  // microtasks, not setTimeout(0): llama.cpp's timings span the message round trips between
  // decode steps, and a timer's delay would be counted as its decode time
  postMessage(data: unknown): void {
    queueMicrotask(() => this.scope.onmessage({ data }).catch((e) => this.onerror?.(e)));
  }
  terminate(): void {}
}
(globalThis as any).Worker = InProcessWorker;
// workerd's URL.createObjectURL exists but throws; the URL is never fetched here
(URL as any).createObjectURL = () => "blob:in-process";

let wllama: Wllama | null = null;
const quiet = { debug() {}, log() {}, warn: console.warn, error: console.error };

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const u = new URL(req.url);
    try {
      if (u.pathname === "/load") {
        const obj = await env.MODELS.get(u.searchParams.get("key")!);
        if (!obj) return new Response("no such object", { status: 404 });
        const blob = new Blob([await obj.arrayBuffer()]);
        const t0 = performance.now();
        // no model download or browser cache here: the GGUF is handed over as a Blob
        const w = new Wllama({ default: "wllama.wasm" }, { logger: u.searchParams.has("debug") ? console : quiet, suppressNativeLog: !u.searchParams.has("debug"), cacheManager: {} as any, modelManager: {} as any });
        // not compat mode: workerd has JSPI and memory64 (the package's own probe compiles WASM
        // from bytes, which workerd forbids)
        (w as any).getWorkerResources = () => ({ wasmPath: "wllama.wasm", compat: false, noWebGPU: true });
        await w.loadModel([blob], { n_threads: 1, n_ctx: 1024, n_gpu_layers: 0, n_parallel: 1 });
        wllama = w;
        return Response.json({ loadMs: performance.now() - t0, wllama: WLLAMA_VERSION, llama: LIBLLAMA_VERSION });
      }
      if (u.pathname === "/run") {
        if (!wllama) return new Response("load first", { status: 409 });
        const prompt = " the".repeat(Number(u.searchParams.get("prompt")));
        const n = Number(u.searchParams.get("n"));
        const t0 = performance.now();
        const r: any = await wllama.createCompletion({ prompt, n_predict: n, temperature: 0, ignore_eos: true, cache_prompt: false } as any);
        const wallMs = performance.now() - t0;
        return Response.json({ wallMs, timings: r.timings, tokens: r.tokens ?? null, content: typeof r.content === "string" ? r.content.slice(0, 80) : null });
      }
      return new Response("not found", { status: 404 });
    } catch (e) {
      return new Response(String((e as Error)?.stack ?? e), { status: 500 });
    }
  },
};
