/**
 * Benchmark Worker for bench/wasm_bench.mjs: runs inside workerd (Miniflare), single thread.
 *   GET /peak-dot, /peak-copy   dot-product and memory-copy ceilings
 *   GET /load?variant=&key=     load the GGUF from R2 into this isolate
 *   GET /tokenizer?key=         build the edge's Tokenizer from its JSON in R2 and encode one chat
 *                               (the harness reads the JS heap around it: what the edge keeps)
 *   GET /prefill?n=&mode=, /decode?n=&sample= timed steps on the loaded model (the harness also reads workerd's
 *                               CPU time around each call: on a shared machine that is the
 *                               figure that does not count other processes' time)
 * Local workerd advances timers during compute (production Workers do not), so timing here is
 * valid for this benchmark only.
 */
import relaxedModule from "../../kernels-wasm/build/kernels-relaxed.wasm";
import simdModule from "../../kernels-wasm/build/kernels-simd.wasm";
import { instantiateKernels, loadModel, relaxedSelfCheck, Sampler, type Kernels, type Model } from "../../kernels-wasm/src/runtime/index";
import { Tokenizer } from "../../kernels-wasm/src/tokenizer/index";
import { phases } from "./profile";
import { SortSampler } from "./sort-sampler";

interface Env { MODELS: R2Bucket }

async function kernels(variant: string): Promise<{ kern: Kernels; selfCheck: boolean | null }> {
  if (variant === "relaxed") {
    const kern = await instantiateKernels(relaxedModule, "relaxed");
    return { kern, selfCheck: relaxedSelfCheck(kern.k, Math.ceil(kern.k.heap_base() / 64) * 64) };
  }
  return { kern: await instantiateKernels(simdModule, "simd128"), selfCheck: null };
}

let state: { model: Model; pos: number; last: number } | null = null;
/** Kept for the life of the isolate, as the edge keeps its tokenizer. */
let tokenizer: Tokenizer | null = null;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const u = new URL(req.url);
    if (u.pathname === "/ping") return new Response("ok"); // lets the inspector's queued GC run
    const variant = u.searchParams.get("variant") ?? "simd128";
    const { kern, selfCheck } = await kernels(variant);
    const k = kern.k as any;
    // /peak-dot?iters=: register-resident dots; /peak-copy?mb=&reps=: memory.copy. The harness
    // divides the work by workerd's CPU time around the call.
    if (u.pathname === "/peak-dot") {
      const iters = Number(u.searchParams.get("iters") ?? 1e7);
      const t = performance.now();
      (variant === "relaxed" ? k.peak_dot_relaxed : k.peak_dot_i16)(iters);
      return Response.json({ macs: iters * (variant === "relaxed" ? 8 * 16 : 8 * 8), wallMs: performance.now() - t });
    }
    if (u.pathname === "/peak-copy") {
      const n = Number(u.searchParams.get("mb") ?? 64) << 20, reps = Number(u.searchParams.get("reps") ?? 4);
      const base = Math.ceil(k.heap_base() / 65536) * 65536;
      const need = base + 2 * n - k.memory.buffer.byteLength;
      if (need > 0) { k.memory.grow(Math.ceil(need / 65536)); k.copy_bytes(base + n, base, n, 1); } // fault pages in
      const t = performance.now();
      k.copy_bytes(base + n, base, n, reps);
      return Response.json({ bytes: n * reps, wallMs: performance.now() - t });
    }
    if (u.pathname === "/load") {
      const key = u.searchParams.get("key")!;
      const t0 = performance.now();
      state = {
        model: await loadModel({
          async read(offset, length) {
            const o = await env.MODELS.get(key, { range: length === undefined ? { offset } : { offset, length } });
            if (!o) throw new Error(`no R2 object ${key}`);
            return o.body;
          },
        }, kern, { sinkTokens: 4, windowTokens: 508 }),
        pos: 0, last: 0,
      };
      const m = state.model;
      return Response.json({ variant, selfCheck, loadMs: performance.now() - t0, prefillBatch: m.opts.prefillBatch, weightBytes: m.layout.dataBytes, memoryBytes: m.kernels.k.memory.buffer.byteLength, cfg: m.cfg });
    }
    if (u.pathname === "/tokenizer") {
      const o = await env.MODELS.get(u.searchParams.get("key")!);
      if (!o) return new Response("no tokenizer JSON", { status: 404 });
      const t0 = performance.now();
      tokenizer = Tokenizer.fromJSON(await o.json());
      const loadMs = performance.now() - t0;
      const ids = tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: "Write a poem about the sea, please." }], { addGenerationPrompt: true }));
      return Response.json({ loadMs, promptTokens: ids.length, vocabSize: tokenizer.vocabSize });
    }
    // /prefill?n=&mode=batched|stepwise: n prompt tokens from position 0; /decode?n=: n greedy
    // steps after them; /decode?n=&sample=T[&impl=sort]: n steps sampled at temperature T (top_p 1,
    // top_k 0, the OpenAI defaults at T = 1), each step's forward + sample() on its logits.
    if (!state) return new Response("load first", { status: 409 });
    const n = Number(u.searchParams.get("n") ?? 64);
    const m = state.model, V = m.cfg.vocabSize;
    // /phase?pos=&i=&reps=: one phase of a decode step, repeated (bench/wasm_profile.mjs); no i: the list
    if (u.pathname === "/phase") {
      const ph = phases(m, Number(u.searchParams.get("pos") ?? 384));
      if (!u.searchParams.has("i")) return Response.json(ph.map((p) => ({ name: p.name, callsPerToken: p.callsPerToken })));
      const p = ph[Number(u.searchParams.get("i"))], reps = Number(u.searchParams.get("reps") ?? 100);
      const t = performance.now();
      for (let r = 0; r < reps; r++) p.run();
      return Response.json({ reps, wallMs: performance.now() - t });
    }
    const t0 = performance.now();
    if (u.pathname === "/prefill") {
      // mode=batched: Model.prefill (prefillBatch tokens per step, logits of the last only);
      // mode=stepwise: forward() token by token, as before batched prefill existed
      state.pos = 0;
      const prompt = Array.from({ length: n }, (_, i) => (1000 + 7919 * (i + state!.last)) % V);
      if (u.searchParams.get("mode") === "stepwise") for (const t of prompt) m.forward(t, state.pos++);
      else { m.prefill(prompt, 0); state.pos = n; }
      state.last = m.greedy();
    } else if (u.searchParams.has("sample")) {
      // impl=sort: the sorting sampler this runtime used before (the peer)
      const o = { temperature: Number(u.searchParams.get("sample")), topP: 1, topK: 0, seed: state.pos };
      const s = u.searchParams.get("impl") === "sort" ? new SortSampler(o, V) : new Sampler(o, V);
      for (let i = 0; i < n; i++) state.last = s.sample(m.forward(state.last, state.pos++));
    } else {
      for (let i = 0; i < n; i++) { m.forward(state.last, state.pos++); state.last = m.greedy(); }
    }
    return Response.json({ n, wallMs: performance.now() - t0 });
  },
};
