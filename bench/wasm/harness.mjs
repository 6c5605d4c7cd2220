// Shared by bench/wasm_bench.mjs and bench/wasm_profile.mjs: bundles bench/wasm/worker.ts and runs
// it in workerd (Miniflare), one isolate per call of withWorker().
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { execSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
// two levels below root, as bench/wasm/: the .wasm import paths of the bundle stay valid
export const outDir = join(root, ".cache/bench-wasm");

/** Bundles a bench worker; the .wasm imports stay modules (workerd compiles them at load). */
export async function bundleWorker(entry = join(root, "bench/wasm/worker.ts"), out = "worker.js") {
  mkdirSync(outDir, { recursive: true });
  await build({ entryPoints: [entry], bundle: true, format: "esm", platform: "neutral", outfile: join(outDir, out), external: ["*.wasm"], logLevel: "error" });
  return join(outDir, out);
}

function workerdPids() {
  try {
    return execSync(`pgrep -P ${process.pid} -f workerd || true`).toString().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
}

/** Runs fn(mf, workerdPid) against a fresh workerd running the bundled script. */
export async function withWorker(scriptPath, fn, extra = {}) {
  const before = new Set(workerdPids());
  const mf = new Miniflare({
    modules: true, scriptPath,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-20", r2Buckets: ["MODELS"], ...extra,
  });
  await mf.ready;
  const pid = workerdPids().find((p) => !before.has(p));
  try { return await fn(mf, pid); } finally { await mf.dispose(); }
}

export async function get(mf, path) {
  const r = await mf.dispatchFetch(`http://bench${path}`);
  const t = await r.text();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${t.slice(0, 500)}`);
  return JSON.parse(t);
}

/** Puts a local file into the isolate's R2 bucket as `key`. */
export async function putFile(mf, key, path) {
  const bucket = await mf.getR2Bucket("MODELS");
  const buf = readFileSync(path);
  await bucket.put(key, buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const TICK = Number(execSync("getconf CLK_TCK").toString());
/** utime + stime of a process, seconds. */
export const cpuSeconds = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / TICK; };
export const hwmKiB = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);

/**
 * The isolate's JS memory through workerd's inspector, after a full GC: { usedSize (V8 heap),
 * backingStorageSize (ArrayBuffer backing stores: typed arrays' data) } in bytes. Start the
 * worker with withWorker(script, fn, { inspectorPort }). workerd runs the queued GC only when the
 * isolate is entered: /ping requests follow it until it has run.
 */
export async function jsHeap(mf, inspectorPort) {
  const { default: WebSocket } = await import("ws");
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
  const url = targets.find((t) => t.webSocketDebuggerUrl)?.webSocketDebuggerUrl;
  if (!url) throw new Error(`no inspector target on port ${inspectorPort}`);
  const ws = new WebSocket(url);
  await new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); });
  let id = 0;
  const pending = new Map();
  ws.on("message", (m) => { const d = JSON.parse(String(m)); const p = pending.get(d.id); if (p) { pending.delete(d.id); d.error ? p.rej(new Error(JSON.stringify(d.error))) : p.res(d.result); } });
  const call = (method, params = {}) => new Promise((res, rej) => { pending.set(++id, { res, rej }); ws.send(JSON.stringify({ id, method, params })); });
  const timeout = (p, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`inspector: ${what} timed out`)), 30_000))]);
  try {
    await timeout(call("HeapProfiler.enable"), "HeapProfiler.enable");
    for (let i = 0; i < 2; i++) {
      // ping until the GC has run: the inspector's message may land after a given ping
      let done = false;
      const gc = call("HeapProfiler.collectGarbage").then(() => { done = true; });
      for (let t = 0; !done; t++) {
        if (t === 300) throw new Error("inspector: HeapProfiler.collectGarbage did not run in 30 s");
        await (await mf.dispatchFetch("http://bench/ping")).text();
        await Promise.race([gc, new Promise((r) => setTimeout(r, 100))]);
      }
    }
    const u = await timeout(call("Runtime.getHeapUsage"), "Runtime.getHeapUsage");
    return { usedSize: u.usedSize, backingStorageSize: u.backingStorageSize ?? 0 };
  } finally { ws.close(); }
}
