#!/usr/bin/env node
// WASM runtime benchmark, single thread inside workerd (Miniflare): decode and prefill tok/s of
// SmolLM2-135M Q4_1 and a 15M-shape model, SIMD128 and relaxed SIMD separately, peak memory
// (workerd VmHWM minus its baseline), with the dot-product and memory-copy ceilings measured in
// the same run. Peer: wllama (llama.cpp in WASM, single thread) when --wllama-tok-s results are
// produced by bench/wasm_wllama.mjs in the same invocation (see --with-wllama).
//
//   .venv/bin/python bench/wasm_tiny_gguf.py            # once: .cache/bench/tiny15m-q4_1.gguf
//   npm run build -w kernels-wasm
//   taskset -c 1 node bench/wasm_bench.mjs [--with-wllama] [--quick]
//
// Writes bench/results/wasm/<date>-<cpu>.json (BENCH.md format).
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { execFileSync, execSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = new Set(process.argv.slice(2));
const quick = args.has("--quick");
const MODELS = [
  { id: "smollm2-135m", path: join(root, "models/smollm2-135m-instruct-q4_1.gguf"), target: 30, macs: 134.5e6 },
  { id: "tiny15m", path: join(root, ".cache/bench/tiny15m-q4_1.gguf"), target: 300, macs: null },
];
for (const m of MODELS) if (!existsSync(m.path)) throw new Error(`${m.path} missing (see the header of this file)`);

// Bundle the bench worker; the .wasm imports stay modules (workerd compiles them at load).
const outDir = join(root, ".cache/bench-wasm"); // two levels below root, as bench/wasm/: the .wasm import paths stay valid
mkdirSync(outDir, { recursive: true });
await build({
  entryPoints: [join(root, "bench/wasm/worker.ts")], bundle: true, format: "esm", platform: "neutral",
  outfile: join(outDir, "worker.js"), external: ["*.wasm"], logLevel: "error",
});

function workerdPids() {
  try {
    return execSync(`pgrep -P ${process.pid} -f workerd || true`).toString().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const TICK = Number(execSync("getconf CLK_TCK").toString());
/** utime + stime of a process, seconds. */
const cpuSeconds = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / TICK; };
const hwmKiB = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);

async function withWorker(fn) {
  const before = new Set(workerdPids());
  const mf = new Miniflare({
    modules: true, scriptPath: join(outDir, "worker.js"),
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-20", r2Buckets: ["MODELS"],
  });
  await mf.ready;
  const pid = workerdPids().find((p) => !before.has(p));
  try { return await fn(mf, pid); } finally { await mf.dispose(); }
}

const get = async (mf, path) => {
  const r = await mf.dispatchFetch(`http://bench${path}`);
  const t = await r.text();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${t.slice(0, 500)}`);
  return JSON.parse(t);
};

const results = { peak: {}, runs: [] };
for (const variant of ["simd128", "relaxed"]) {
  results.peak[variant] = await withWorker(async (mf, pid) => {
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
    const r = await withWorker(async (mf, pid) => {
      const bucket = await mf.getR2Bucket("MODELS");
      const buf = readFileSync(m.path);
      await bucket.put("m.gguf", buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
      await get(mf, `/noop`).catch(() => {}); // the isolate is up before the baseline
      const base = pid ? hwmKiB(pid) : NaN;
      const out = await get(mf, `/load?variant=${variant}&key=m.gguf`);
      const steps = (quick ? 16 : 64) * (m.id === "tiny15m" ? 4 : 1);
      out.prefillRuns = []; out.decodeRuns = []; out.prefillCpuRuns = []; out.decodeCpuRuns = [];
      for (let i = 0; i < (quick ? 3 : 5); i++) {
        for (const phase of ["prefill", "decode"]) {
          const c0 = cpuSeconds(pid);
          const t = await get(mf, `/${phase}?n=${steps}`);
          const c1 = cpuSeconds(pid);
          out[`${phase}Runs`].push(steps / (t.wallMs / 1000));
          out[`${phase}CpuRuns`].push(steps / (c1 - c0));
        }
      }
      out.steps = steps;
      out.peakMemMB = pid ? (hwmKiB(pid) - base) / 1024 : null;
      return out;
    });
    for (const k of ["prefill", "decode"]) { r[`${k}TokS`] = median(r[`${k}Runs`]); r[`${k}CpuTokS`] = median(r[`${k}CpuRuns`]); }
    r.model = m.id;
    console.log(m.id, variant, { load_ms: r.loadMs, prefill: r.prefillTokS, decode: r.decodeTokS, prefillCpu: r.prefillCpuTokS, decodeCpu: r.decodeCpuTokS, mem_mb: r.peakMemMB, selfCheck: r.selfCheck });
    results.runs.push(r);
  }
}

let peer = {};
if (args.has("--with-wllama")) {
  const out = execFileSync(process.execPath, [join(root, "bench/wasm_wllama.mjs"), ...MODELS.map((m) => m.path)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  peer = JSON.parse(out.trim().split("\n").pop());
  console.log("wllama", peer);
}

const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))[1].trim();
const slug = cpu.toLowerCase().replace(/\(r\)|\(tm\)|cpu|@.*$/g, "").trim().replace(/[^a-z0-9]+/g, "-").replace(/-+$/, "");
const date = new Date().toISOString().slice(0, 10);
let commit = "unknown";
try { commit = execSync("git rev-parse HEAD", { cwd: root }).toString().trim(); } catch {}
const metrics = [];
for (const r of results.runs) {
  const m = MODELS.find((x) => x.id === r.model);
  const macs = m.macs ?? macsPerToken(r.cfg);
  const pk = results.peak[r.variant];
  const computeLimit = (pk.gmacPerS * 1e9) / macs;
  const bwLimit = (pk.copyGBs * 1e9) / r.weightBytes;
  const cond = `model=${r.model},q4_1,kernels=${r.variant},workerd,threads=1`;
  const limit = { value: +Math.min(computeLimit, bwLimit).toFixed(1), how: `min(peak ${r.variant} dot ${pk.gmacPerS.toFixed(2)} GMAC/s / ${(macs / 1e6).toFixed(1)} M MAC per token = ${computeLimit.toFixed(1)}, memory copy ${pk.copyGBs.toFixed(2)} GB/s / ${(r.weightBytes / 1e6).toFixed(1)} MB weights = ${bwLimit.toFixed(1)}) tok/s` };
  const wl = peer[r.model];
  const peerOf = (k) => (wl ? { peer: { name: "wllama 3.8.1 single-thread (llama.cpp wasm), same GGUF", value: +wl[k].toFixed(2) } } : {});
  for (const timing of ["cpu", "wall"]) {
    const T = timing === "cpu" ? "Cpu" : "";
    const how = timing === "cpu" ? "steps / workerd CPU seconds (utime+stime) around the call" : "steps / wall seconds inside workerd";
    metrics.push({
      name: `decode_tok_s[${cond},timing=${timing}]`, value: +r[`decode${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      ...peerOf("decode"), limit, target: { value: m.target, source: "issue 4" },
      runs: r[`decode${T}Runs`].map((x) => +x.toFixed(2)), note: `${r.steps} greedy steps after a ${r.steps}-token prompt; ${how}; median of ${r.decodeRuns.length}`,
    });
    metrics.push({
      name: `prefill_tok_s[${cond},prompt=${r.steps},timing=${timing}]`, value: +r[`prefill${T}TokS`].toFixed(2), unit: "tok/s", better: "higher",
      ...peerOf("prefill"), limit, runs: r[`prefill${T}Runs`].map((x) => +x.toFixed(2)),
      note: `token-by-token prefill (no batched matmul); ${how}; median of ${r.prefillRuns.length}`,
    });
  }
  metrics.push({
    name: `peak_memory_mb[${cond},kv_slots=512]`, value: r.peakMemMB === null ? null : +r.peakMemMB.toFixed(1), unit: "MB", better: "lower",
    limit: { value: +(r.memoryBytes / 1048576).toFixed(1), how: "the WASM memory itself (weights + KV + activations), MiB" },
    target: { value: 128, source: "issue 4 (Workers isolate limit)" }, note: "workerd VmHWM after load+bench minus VmHWM before, MiB",
  });
  metrics.push({ name: `load_ms[${cond}]`, value: Math.round(r.loadMs), unit: "ms", better: "lower" });
}
for (const v of ["relaxed"]) metrics.push({ name: `relaxed_self_check[workerd]`, value: results.runs.find((r) => r.variant === v)?.selfCheck ? 1 : 0, unit: "pass", better: "higher" });

function macsPerToken(c) {
  const kv = c.nKVHeads * c.headDim;
  return c.nLayers * (2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.hiddenDim) + c.vocabSize * c.dim;
}

const dir = join(root, "bench/results/wasm");
mkdirSync(dir, { recursive: true });
let file = join(dir, `${date}-${slug}.json`);
for (let i = 2; existsSync(file); i++) file = join(dir, `${date}-${slug}-${i}.json`);
const affinity = (() => { try { return execSync(`taskset -p ${process.pid}`).toString().trim(); } catch { return "?"; } })();
writeFileSync(file, JSON.stringify({
  topic: "wasm", device: cpu, commit, command: `node bench/wasm_bench.mjs ${process.argv.slice(2).join(" ")}`.trim(), date,
  conditions: { affinity, load_average: readFileSync("/proc/loadavg", "utf8").trim() }, metrics,
}, null, 2) + "\n");
console.log(`wrote ${file}`);
