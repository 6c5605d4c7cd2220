#!/usr/bin/env node
// WASM runtime benchmark, single thread inside workerd (Miniflare): decode and prefill tok/s of
// SmolLM2-135M Q4_1 and a 15M-shape model, SIMD128 and relaxed SIMD separately, peak memory
// (workerd VmHWM minus its baseline), with the dot-product and memory-copy ceilings measured in
// the same run. Peer, in the same run on the same GGUF files: wllama (@wllama/wllama, llama.cpp
// compiled to WASM) single-threaded, in workerd too (bench/wasm/wllama-worker.ts).
// Sampled decode (temperature 1, top_p 1, top_k 0: the OpenAI defaults) next to greedy, with the
// sorting sampler used before (bench/wasm/sort-sampler.ts) as its peer. Isolate memory as the
// edge holds it: the WASM memory + the isolate's JS memory (V8 used heap + ArrayBuffer backing
// stores after a full GC, through workerd's inspector) with the model loaded and the edge's
// tokenizer built from its JSON (SmolLM2 only).
//
//   .venv/bin/python bench/wasm_tiny_gguf.py            # once: .cache/bench/tiny15m-q4_1.gguf
//   npm run build -w kernels-wasm
//   taskset -c 1 node bench/wasm_bench.mjs [--quick] [--no-wllama]
//
// Writes bench/results/wasm/<date>-<cpu>.json (BENCH.md format; a new file per run).
import { build } from "esbuild";
import { execSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bundleWorker, cpuSeconds, get, hwmKiB, jsHeap, median, outDir, putFile, root, withWorker } from "./wasm/harness.mjs";
import { writeWllamaGlue } from "./wasm/wllama-glue.mjs";

const args = new Set(process.argv.slice(2));
const quick = args.has("--quick");
const REPS = quick ? 3 : 5;
const MODELS = [
  { id: "smollm2-135m", path: join(root, "models/smollm2-135m-instruct-q4_1.gguf"), target: 30, steps: quick ? 16 : 64, tokenizer: join(root, ".cache/tokenizers/smollm2-135m-instruct.json") },
  { id: "tiny15m", path: join(root, ".cache/bench/tiny15m-q4_1.gguf"), target: 300, steps: quick ? 64 : 256 },
];
for (const m of MODELS) if (!existsSync(m.path)) throw new Error(`${m.path} missing (see the header of this file)`);
const script = await bundleWorker();
// the code measured: HEAD at the start, plus whatever is uncommitted in it
let commit = "unknown", dirty = "";
try { commit = execSync("git rev-parse HEAD", { cwd: root }).toString().trim(); } catch {}
try { dirty = execSync("git status --porcelain kernels-wasm bench/wasm bench/wasm_bench.mjs", { cwd: root }).toString().trim(); } catch {}

// ---- ours --------------------------------------------------------------------------------
const results = { peak: {}, runs: [] };
for (const variant of ["simd128", "relaxed"]) {
  results.peak[variant] = await withWorker(script, async (mf, pid) => {
    const cpuRate = async (path, field) => {
      const c0 = cpuSeconds(pid);
      const r = await get(mf, path);
      return r[field] / (cpuSeconds(pid) - c0);
    };
    await get(mf, `/peak-copy?variant=${variant}&mb=64&reps=1`); // grow + fault in once
    const dot = [], copy = [];
    for (let i = 0; i < 5; i++) {
      dot.push((await cpuRate(`/peak-dot?variant=${variant}&iters=${2e7}`, "macs")) / 1e9);
      copy.push((await cpuRate(`/peak-copy?variant=${variant}&mb=64&reps=8`, "bytes")) / 1e9);
    }
    return { gmacPerS: median(dot), copyGBs: median(copy) };
  });
  console.log("peak", variant, results.peak[variant]);
  for (const m of MODELS) {
    const inspectorPort = 9300 + Math.floor(Math.random() * 600);
    const r = await withWorker(script, async (mf, pid) => {
      await putFile(mf, "m.gguf", m.path);
      if (m.tokenizer) await putFile(mf, "tok.json", m.tokenizer);
      await get(mf, `/noop`).catch(() => {}); // the isolate is up before the baseline
      const base = pid ? hwmKiB(pid) : NaN;
      // JS memory = V8 heap + ArrayBuffer backing stores (the WASM memory is counted apart)
      const js = async () => { const h = await jsHeap(mf, inspectorPort); return { mib: (h.usedSize + h.backingStorageSize) / 1048576, ...h }; };
      const heap0 = await js();
      const out = await get(mf, `/load?variant=${variant}&key=m.gguf`);
      const heap1 = await js();
      const phases = {
        batched: `/prefill?mode=batched&n=${m.steps}`, stepwise: `/prefill?mode=stepwise&n=${m.steps}`, decode: `/decode?n=${m.steps}`,
        sampled: `/decode?n=${m.steps}&sample=1`, sampledSort: `/decode?n=${m.steps}&sample=1&impl=sort`,
      };
      for (const k of Object.keys(phases)) { out[`${k}Runs`] = []; out[`${k}CpuRuns`] = []; }
      const timed = async (k) => {
        const c0 = cpuSeconds(pid);
        const t = await get(mf, `${phases[k]}&variant=${variant}`);
        const c1 = cpuSeconds(pid);
        out[`${k}Runs`].push(m.steps / (t.wallMs / 1000));
        out[`${k}CpuRuns`].push(m.steps / (c1 - c0));
      };
      // stepwise prefill, then batched prefill, then decode after the batched prompt
      for (let i = 0; i < REPS; i++) for (const k of ["stepwise", "batched", "decode"]) await timed(k);
      out.peakMemMB = pid ? (hwmKiB(pid) - base) / 1024 : null;
      // the edge's tokenizer after the greedy phases, so that peakMemMB stays the model's alone
      // (as in earlier runs)
      if (m.tokenizer) {
        const heap2 = await js();
        out.tokenizer = await get(mf, `/tokenizer?key=tok.json`);
        const heap3 = await js();
        out.heap = { modelMiB: heap1.mib - heap0.mib, tokenizerMiB: heap3.mib - heap2.mib, baseMiB: heap0.mib, totalMiB: heap3.mib, raw: [heap0, heap1, heap2, heap3] };
        out.peakWithTokenizerMB = pid ? (hwmKiB(pid) - base) / 1024 : null;
      }
      // sampled decode, each after the batched prompt again (the greedy decode's positions)
      for (let i = 0; i < REPS; i++) {
        for (const k of ["sampled", "sampledSort"]) { await get(mf, `${phases.batched}&variant=${variant}`); await timed(k); }
      }
      // a run of the earlier layout (sampled rows inside the greedy loop) read a peak ~130 MB
      // higher: the peak after the samplers is read apart, so peakMemMB stays comparable
      out.peakAfterSampledMB = pid ? (hwmKiB(pid) - base) / 1024 : null;
      return out;
    }, { inspectorPort });
    for (const k of ["batched", "stepwise", "decode", "sampled", "sampledSort"]) { r[`${k}TokS`] = median(r[`${k}Runs`]); r[`${k}CpuTokS`] = median(r[`${k}CpuRuns`]); }
    r.model = m.id;
    console.log(m.id, variant, { load_ms: Math.round(r.loadMs), prefill_batched: r.batchedCpuTokS, prefill_stepwise: r.stepwiseCpuTokS, decode: r.decodeCpuTokS, decode_wall: r.decodeTokS, sampled_t1: r.sampledCpuTokS, sampled_t1_sort: r.sampledSortCpuTokS, mem_mb: r.peakMemMB, mem_mb_with_tokenizer: r.peakWithTokenizerMB, mem_mb_after_sampled: r.peakAfterSampledMB, heap: r.heap && { modelMiB: r.heap.modelMiB, tokenizerMiB: r.heap.tokenizerMiB, totalMiB: r.heap.totalMiB }, selfCheck: r.selfCheck });
    results.runs.push(r);
  }
}

// ---- peer: wllama, single thread, in workerd --------------------------------------------
// One completion = prompt + n greedy tokens. Decode CPU per token = (CPU of a prompt+(n+1)
// completion − CPU of a prompt+1 completion) / n; prefill CPU = the prompt+1 completion's CPU
// (it includes one decode step). Wall figures are llama.cpp's own timings (prompt_ms,
// predicted_ms), which run on performance.now() (advances during compute in local workerd).
const peer = {};
let peerName = null;
if (!args.has("--no-wllama")) {
  const glue = writeWllamaGlue();
  peerName = `wllama ${glue.pkgVersion} (llama.cpp ${glue.llamaVersion} in WASM, memory64 + JSPI build), 1 thread, in workerd, same GGUF`;
  const wScript = join(outDir, "wllama-worker.js");
  await build({
    entryPoints: [join(root, "bench/wasm/wllama-worker.ts")], bundle: true, format: "esm", platform: "neutral",
    mainFields: ["module", "main"], conditions: ["import"], outfile: wScript, external: ["*.wasm"], alias: { "wllama-glue": glue.path }, logLevel: "error",
  });
  for (const m of MODELS) {
    peer[m.id] = await withWorker(wScript, async (mf, pid) => {
      await putFile(mf, "m.gguf", m.path);
      const load = await get(mf, "/load?key=m.gguf");
      const run = async (n) => { const c0 = cpuSeconds(pid); const r = await get(mf, `/run?prompt=${m.steps}&n=${n}`); return { ...r, cpu: cpuSeconds(pid) - c0 }; };
      await run(1); await run(8); // warm-up: workerd tiers the 8.7 MB module up on first use
      const o = { loadMs: load.loadMs, prefillCpuRuns: [], decodeCpuRuns: [], prefillRuns: [], decodeRuns: [], promptN: null, predictedN: null };
      for (let i = 0; i < REPS; i++) {
        const a = await run(1), b = await run(m.steps + 1);
        if (a.timings.prompt_n !== m.steps) throw new Error(`wllama prompt was ${a.timings.prompt_n} tokens, not ${m.steps}`);
        o.prefillCpuRuns.push(m.steps / a.cpu);
        o.decodeCpuRuns.push(m.steps / (b.cpu - a.cpu));
        o.prefillRuns.push(b.timings.prompt_per_second);
        o.decodeRuns.push(b.timings.predicted_per_second);
        o.promptN = b.timings.prompt_n; o.predictedN = b.timings.predicted_n;
      }
      for (const k of ["prefill", "decode"]) { o[`${k}TokS`] = median(o[`${k}Runs`]); o[`${k}CpuTokS`] = median(o[`${k}CpuRuns`]); }
      return o;
    });
    console.log("wllama", m.id, { prefill: peer[m.id].prefillCpuTokS, decode: peer[m.id].decodeCpuTokS, prefill_wall: peer[m.id].prefillTokS, decode_wall: peer[m.id].decodeTokS });
  }
}

// ---- results -----------------------------------------------------------------------------
const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))[1].trim();
const slug = cpu.toLowerCase().replace(/\(r\)|\(tm\)|cpu|@.*$/g, "").trim().replace(/[^a-z0-9]+/g, "-").replace(/-+$/, "");
const date = new Date().toISOString().slice(0, 10);
const metrics = [];
const table = [];
for (const r of results.runs) {
  const m = MODELS.find((x) => x.id === r.model);
  const macs = macsPerToken(r.cfg);
  const pk = results.peak[r.variant];
  const computeLimit = (pk.gmacPerS * 1e9) / macs;
  const bwLimit = (pk.copyGBs * 1e9) / r.weightBytes;
  const cond = `model=${r.model},q4_1,kernels=${r.variant},workerd,threads=1`;
  const limit = { value: +Math.min(computeLimit, bwLimit).toFixed(1), how: `min(peak ${r.variant} dot ${pk.gmacPerS.toFixed(2)} GMAC/s / ${(macs / 1e6).toFixed(1)} M MAC per token = ${computeLimit.toFixed(1)}, memory copy ${pk.copyGBs.toFixed(2)} GB/s / ${(r.weightBytes / 1e6).toFixed(1)} MB weights = ${bwLimit.toFixed(1)}) tok/s` };
  // batched prefill reads each weight once per batch and runs the output matvec for the last
  // prompt token only
  const B = Math.min(r.prefillBatch, m.steps);
  const macsPrefill = macs - r.cfg.vocabSize * r.cfg.dim * (1 - 1 / m.steps);
  const pfCompute = (pk.gmacPerS * 1e9) / macsPrefill, pfBw = (pk.copyGBs * 1e9 * B) / r.weightBytes;
  const prefillLimit = { value: +Math.min(pfCompute, pfBw).toFixed(1), how: `min(peak ${r.variant} dot ${pk.gmacPerS.toFixed(2)} GMAC/s / ${(macsPrefill / 1e6).toFixed(1)} M MAC per prompt token = ${pfCompute.toFixed(1)}, memory copy ${pk.copyGBs.toFixed(2)} GB/s × ${B} tokens per weight read / ${(r.weightBytes / 1e6).toFixed(1)} MB weights = ${pfBw.toFixed(1)}) tok/s` };
  const wl = peer[r.model];
  const peerOf = (k, T) => (wl ? { peer: { name: peerName, value: +wl[`${k}${T}TokS`].toFixed(2) } } : {});
  for (const timing of ["cpu", "wall"]) {
    const T = timing === "cpu" ? "Cpu" : "";
    const how = timing === "cpu" ? "steps / workerd CPU seconds (utime+stime) around the call" : "steps / wall seconds inside workerd";
    const peerHow = timing === "cpu" ? "peer: wllama's workerd CPU seconds, decode = difference of a prompt+(n+1) and a prompt+1 completion" : "peer: llama.cpp's own timings (predicted_ms, prompt_ms)";
    metrics.push({
      name: `decode_tok_s[${cond},timing=${timing}]`, value: +r[`decode${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      ...peerOf("decode", T), limit, target: { value: m.target, source: "issue 4" },
      runs: r[`decode${T}Runs`].map((x) => +x.toFixed(2)), note: `${m.steps} greedy steps after a ${m.steps}-token prompt; ${how}; ${peerHow}; median of ${REPS}`,
    });
    metrics.push({
      name: `prefill_tok_s[${cond},prompt=${m.steps},batch=${r.prefillBatch},timing=${timing}]`, value: +r[`batched${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      ...peerOf("prefill", T), limit: prefillLimit, runs: r[`batched${T}Runs`].map((x) => +x.toFixed(2)),
      note: `Model.prefill: ${r.prefillBatch} tokens per step through each layer (row-tiled matmat), logits for the last token only; ${how}; ${peerHow} (wllama: n_batch default); median of ${REPS}`,
    });
    metrics.push({
      name: `prefill_tok_s[${cond},prompt=${m.steps},batch=1,timing=${timing}]`, value: +r[`stepwise${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      runs: r[`stepwise${T}Runs`].map((x) => +x.toFixed(2)), note: `forward() token by token with logits every token (the previous prefill path); ${how}; median of ${REPS}`,
    });
  }
  for (const timing of ["cpu", "wall"]) {
    const T = timing === "cpu" ? "Cpu" : "";
    metrics.push({
      name: `decode_tok_s[${cond},sampling=temperature 1,timing=${timing}]`, value: +r[`sampled${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      peer: { name: "the sorting sampler used before (bench/wasm/sort-sampler.ts), same run, same positions", value: +r[`sampledSort${T}TokS`].toFixed(2) },
      limit, target: { value: m.target, source: "issue 4" }, runs: r[`sampled${T}Runs`].map((x) => +x.toFixed(2)),
      note: `${m.steps} steps sampled at temperature 1 (top_p 1, top_k 0) after a ${m.steps}-token prompt: forward + Sampler.sample; greedy decode in this run: ${r[`decode${T}TokS`].toFixed(2)} tok/s; median of ${REPS}`,
    });
    metrics.push({
      name: `sample_ms_per_token[${cond},sampling=temperature 1,timing=${timing}]`, value: +(1000 / r[`sampled${T}TokS`] - 1000 / r[`decode${T}TokS`]).toFixed(2), unit: "ms", better: "lower",
      peer: { name: "the sorting sampler used before, same run", value: +(1000 / r[`sampledSort${T}TokS`] - 1000 / r[`decode${T}TokS`]).toFixed(2) },
      limit: { value: 0, how: "greedy decode's argmax (in WASM) costs ~0.2% of a step" },
      note: "1/sampled − 1/greedy decode rate of this run (the sampler's cost per token over argmax's)",
    });
  }
  if (r.heap) {
    const wasmMiB = r.memoryBytes / 1048576;
    metrics.push({
      name: `isolate_memory_mb[${cond},wasm memory + js memory,tokenizer loaded]`, value: +(wasmMiB + r.heap.totalMiB).toFixed(1), unit: "MB", better: "lower",
      limit: { value: +wasmMiB.toFixed(1), how: "the WASM memory alone (weights + KV + activations), MiB" },
      target: { value: 128, source: "Workers isolate memory limit (A4 item 3)" },
      note: `WASM memory ${wasmMiB.toFixed(1)} MiB + JS memory ${r.heap.totalMiB.toFixed(1)} MiB (V8 used heap + ArrayBuffer backing stores after a full GC, read through workerd's inspector: the bench worker's own ${r.heap.baseMiB.toFixed(1)} MiB, the Model's JS objects ${r.heap.modelMiB.toFixed(1)} MiB, the edge's Tokenizer built from its R2 JSON and one chat encoded ${r.heap.tokenizerMiB.toFixed(1)} MiB, the rest what the benchmark left). workerd VmHWM rise with the tokenizer loaded too: ${r.peakWithTokenizerMB?.toFixed(1)} MiB (its JSON parse's garbage included); after the sampled-decode rows (both samplers): ${r.peakAfterSampledMB?.toFixed(1)} MiB. Not counted: the edge app's own code and request state (Hono, routes), which this bench worker does not load`,
    });
    metrics.push({ name: `js_heap_mb[tokenizer=${r.model},workerd]`, value: +r.heap.tokenizerMiB.toFixed(2), unit: "MB", better: "lower", note: "V8 used heap + ArrayBuffer backing stores after a full GC (workerd inspector), after minus before Tokenizer.fromJSON + one chat encoded (kept alive), MiB" });
    metrics.push({ name: `js_heap_mb[model=${r.model},${r.variant},workerd]`, value: +r.heap.modelMiB.toFixed(2), unit: "MB", better: "lower", note: "V8 used heap + ArrayBuffer backing stores after a full GC (workerd inspector), after minus before loadModel (the Model's JS objects; its WASM memory is counted apart), MiB" });
  }
  metrics.push({
    name: `peak_memory_mb[${cond},kv_slots=512]`, value: r.peakMemMB === null ? null : +r.peakMemMB.toFixed(1), unit: "MB", better: "lower",
    limit: { value: +(r.memoryBytes / 1048576).toFixed(1), how: "the WASM memory itself (weights + KV + activations), MiB" },
    target: { value: 128, source: "issue 4 (Workers isolate limit)" }, note: "workerd VmHWM after load+bench minus VmHWM before, MiB",
  });
  metrics.push({ name: `load_ms[${cond}]`, value: Math.round(r.loadMs), unit: "ms", better: "lower" });
  table.push({ sampled: r.sampledCpuTokS, sampledSort: r.sampledSortCpuTokS, isolateMiB: r.heap ? r.memoryBytes / 1048576 + r.heap.totalMiB : undefined, model: r.model, kernels: r.variant, decode: r.decodeCpuTokS, wlDecode: wl?.decodeCpuTokS, prefill: r.batchedCpuTokS, stepwise: r.stepwiseCpuTokS, wlPrefill: wl?.prefillCpuTokS, limit: limit.value, pfLimit: prefillLimit.value, target: m.target });
}
metrics.push({ name: `relaxed_self_check[workerd]`, value: results.runs.find((r) => r.variant === "relaxed")?.selfCheck ? 1 : 0, unit: "pass", better: "higher" });

function macsPerToken(c) {
  const kv = c.nKVHeads * c.headDim;
  return c.nLayers * (2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.hiddenDim) + c.vocabSize * c.dim;
}

const f = (x) => (x === undefined ? "   -  " : x.toFixed(1).padStart(6));
console.log("\nCPU-time tok/s, one thread, workerd (ours vs wllama, same GGUF, same run):");
console.log("model         kernels  decode wllama ratio  limit target | prefill(batched) stepwise wllama ratio  limit");
for (const t of table) {
  console.log(`${t.model.padEnd(13)} ${t.kernels.padEnd(8)} ${f(t.decode)} ${f(t.wlDecode)} ${t.wlDecode ? (t.decode / t.wlDecode).toFixed(2).padStart(5) : "    -"} ${f(t.limit)} ${String(t.target).padStart(6)} | ${f(t.prefill)}           ${f(t.stepwise)} ${f(t.wlPrefill)} ${t.wlPrefill ? (t.prefill / t.wlPrefill).toFixed(2).padStart(5) : "    -"} ${f(t.pfLimit)}`);
}

console.log("\nSampled decode at temperature 1, CPU-time tok/s (new sampler vs the sorting one, same run); isolate memory = WASM + JS heap:");
for (const t of table) console.log(`${t.model.padEnd(13)} ${t.kernels.padEnd(8)} sampled ${f(t.sampled)} sorting ${f(t.sampledSort)} greedy ${f(t.decode)}${t.isolateMiB ? `  isolate ${t.isolateMiB.toFixed(1)} MiB` : ""}`);

const dir = join(root, "bench/results/wasm");
mkdirSync(dir, { recursive: true });
let file = join(dir, `${date}-${slug}.json`);
for (let i = 2; existsSync(file); i++) file = join(dir, `${date}-${slug}-${i}.json`);
const affinity = (() => { try { return execSync(`taskset -p ${process.pid}`).toString().trim(); } catch { return "?"; } })();
writeFileSync(file, JSON.stringify({
  topic: "wasm", device: cpu, commit, command: `taskset -c 1 node bench/wasm_bench.mjs ${process.argv.slice(2).join(" ")}`.trim(), date,
  conditions: { affinity, load_average: readFileSync("/proc/loadavg", "utf8").trim(), uncommitted_changes_in_measured_code: dirty ? dirty.split("\n") : [], host: "2 vCPUs shared with other sessions; CPU-time figures count only workerd's own CPU time" },
  metrics,
}, null, 2) + "\n");
console.log(`wrote ${file}`);
