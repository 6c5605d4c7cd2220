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
