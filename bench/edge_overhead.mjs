#!/usr/bin/env node
// Latency the edge adds over calling the pod directly, measured in one run (BENCH.md format).
//
//   node bench/edge_overhead.mjs [--pairs 40] [--out bench/results/edge]
//
// Starts the edge in `wrangler dev` (local workerd) and the real Python pod on CPU serving
// SmolLM2-135M-Instruct (registered with the edge), then sends interleaved pairs of the same
// request: the pod's POST /v1/generate directly, and /v1/completions through the edge with the
// same prompt token ids (so the two do identical model work: a 32-token prompt that the prefix
// cache holds after warm-up, one greedy output token).
//
// A CPU pod's own time per request varies by far more than the edge adds, so each call's pod
// time (the growth of the pod's request_duration_seconds_sum in /metrics, "request received to
// final record") is subtracted from its client-side latency: overhead of a pair =
// (edge latency - pod time) - (direct latency - pod time). The limit is the one extra loopback
// HTTP round trip any proxy adds, measured in the same run (GET /health on the pod).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const PAIRS = Number(opt("pairs", "40"));
const OUT = resolve(ROOT, opt("out", "bench/results/edge"));
const WARMUP = 3;
const MODEL = "smollm2-135m-instruct";
const KEY = "sk-edgeserve-local";
const POD_SECRET = "edgeserve-dev-pod-secret";
// 32 ordinary token ids (two 16-token KV blocks): identical prompt for both paths.
const PROMPT = Array.from({ length: 32 }, (_, i) => 1000 + ((i * 37) % 3000));

const freePort = () =>
  new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });

const procs = [];
function start(cmd, argv) {
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  const keep = (b) => (out = (out + b).slice(-8000));
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  procs.push(child);
  return { child, output: () => out };
}
function stopAll() {
  for (const c of procs) {
    try {
      process.kill(-c.pid, "SIGTERM");
    } catch {}
  }
}
process.on("exit", stopAll);
process.on("SIGINT", () => process.exit(130));

async function waitFor(what, probe, ms, proc) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc?.child.exitCode != null) throw new Error(`${what}: exited\n${proc.output()}`);
    try {
      if (await probe()) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not ready after ${ms} ms\n${proc?.output() ?? ""}`);
}

const now = () => performance.now();
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
};
const round = (x) => Math.round(x * 100) / 100;

/** Pod-side seconds summed over finished requests, and their count. */
async function podTotals(podUrl) {
  const text = await (await fetch(`${podUrl}/metrics`)).text();
  const grab = (name) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return line ? Number(line.slice(name.length + 1)) : NaN;
  };
  return { sum: grab("edgeserve_pod_request_duration_seconds_sum"), count: grab("edgeserve_pod_request_duration_seconds_count") };
}

/** Runs one call and returns its client latency and the pod's own time for it (ms). */
async function measured(podUrl, call) {
  const before = await podTotals(podUrl);
  const client = await call();
  let after = await podTotals(podUrl);
  for (let k = 0; k < 50 && after.count === before.count; k++) {
    await new Promise((r) => setTimeout(r, 10));
    after = await podTotals(podUrl);
  }
  if (after.count !== before.count + 1) throw new Error(`pod finished ${after.count - before.count} requests during one call`);
  return { client, pod: (after.sum - before.sum) * 1000 };
}

async function direct(podUrl, i) {
  const t0 = now();
  const res = await fetch(`${podUrl}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ request_id: `bench-direct-${i}-${Date.now()}`, model: MODEL, prompt_token_ids: PROMPT, max_tokens: 1, sampling: { temperature: 0 } }),
  });
  const text = await res.text();
  const ms = now() - t0;
  if (res.status !== 200 || !text.includes('"final"')) throw new Error(`direct call failed: ${res.status} ${text.slice(0, 200)}`);
  return ms;
}

async function viaEdge(edgeUrl) {
  const t0 = now();
  const res = await fetch(`${edgeUrl}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: MODEL, prompt: PROMPT, max_tokens: 1, temperature: 0 }),
  });
  const text = await res.text();
  const ms = now() - t0;
  let body;
  try {
    body = JSON.parse(text);
  } catch {}
  if (res.status !== 200 || body?.usage?.completion_tokens !== 1) throw new Error(`edge call failed: ${res.status} ${text.slice(0, 300)}`);
  return ms;
}

async function loopback(podUrl) {
  const t0 = now();
  const res = await fetch(`${podUrl}/health`);
  await res.text();
  return now() - t0;
}

async function main() {
  const wrangler = join(ROOT, "node_modules/.bin/wrangler");
  const gguf = join(ROOT, "models/smollm2-135m-instruct-q4_1.gguf");
  const hf = join(ROOT, "models/smollm2-135m-instruct-hf");
  const tokenizer = join(ROOT, ".cache/tokenizers/smollm2-135m-instruct.json");
  if (!existsSync(tokenizer)) execFileSync(process.execPath, [join(ROOT, "kernels-wasm/scripts/export-tokenizer.mjs"), gguf, tokenizer], { stdio: "inherit" });
  if (!existsSync(join(hf, "model.safetensors"))) execFileSync(join(ROOT, ".venv/bin/python"), ["-m", "edgeserve_pod.tools.gguf_to_hf", gguf, hf], { cwd: ROOT, stdio: "inherit" });

  // The Worker is bundled once and served unbundled from a temp dir: wrangler dev would
  // otherwise rebuild and restart it whenever a source file changes during the run.
  const work = mkdtempSync(join(tmpdir(), "edgeserve-bench-"));
  const state = join(work, "state");
  execFileSync(wrangler, ["deploy", "--dry-run", "--outdir", join(work, "dist")], { cwd: ROOT, stdio: "pipe" });
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8").replace(
    /^main = .*$/m,
    'main = "dist/index.js"\nno_bundle = true\nfind_additional_modules = true\nbase_dir = "dist"',
  );
  writeFileSync(join(work, "wrangler.toml"), toml);
  const config = ["--config", join(work, "wrangler.toml")];
  execFileSync(wrangler, ["r2", "object", "put", `edgeserve-models/tokenizers/${MODEL}.json`, "--file", tokenizer, "--local", "--persist-to", state, ...config], { cwd: ROOT, stdio: "pipe" });
  const edgePort = await freePort();
  const edgeUrl = `http://127.0.0.1:${edgePort}`;
  const edge = start(wrangler, ["dev", ...config, "--ip", "127.0.0.1", "--port", String(edgePort), "--persist-to", state, "--log-level", "warn"]);
  await waitFor("edge", async () => (await fetch(`${edgeUrl}/health`)).ok, 60_000, edge);

  const podPort = await freePort();
  const podUrl = `http://127.0.0.1:${podPort}`;
  const pod = start(join(ROOT, ".venv/bin/edgeserve-pod"), ["--model", hf, "--device", "cpu", "--port", String(podPort), "--model-id", MODEL, "--pod-id", "pod-bench", "--edge-url", edgeUrl, "--pod-secret", POD_SECRET, "--drain-timeout-s", "1"]);
  await waitFor(
    "pod registered",
    async () => (await (await fetch(`${edgeUrl}/health`)).json()).models[MODEL].live_pods.includes("pod-bench"),
    180_000,
    pod,
  );

  for (let i = 0; i < WARMUP; i++) {
    await direct(podUrl, `w${i}`);
    await viaEdge(edgeUrl);
  }
  const d = [], e = [], diff = [], rtt = [], dOut = [], eOut = [];
  for (let i = 0; i < PAIRS; i++) {
    rtt.push(await loopback(podUrl));
    // Alternate the order so that drift in the pod's speed does not favour one path.
    const runDirect = () => measured(podUrl, () => direct(podUrl, i));
    const runEdge = () => measured(podUrl, () => viaEdge(edgeUrl));
    let a, b;
    if (i % 2 === 0) {
      a = await runDirect();
      b = await runEdge();
    } else {
      b = await runEdge();
      a = await runDirect();
    }
    if (i % 10 === 9) console.log(`  ${i + 1}/${PAIRS} pairs`);
    d.push(a.client);
    e.push(b.client);
    dOut.push(a.client - a.pod);
    eOut.push(b.client - b.pod);
    diff.push(b.client - b.pod - (a.client - a.pod));
  }
  stopAll();
  rmSync(work, { recursive: true, force: true });

  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "HEAD"], { cwd: ROOT }).toString().trim();
  } catch {}
  const cpu = cpus()[0]?.model?.trim() ?? "unknown CPU";
  const date = new Date().toISOString().slice(0, 10);
  const cond = `completions,prompt=32,max_tokens=1,cpu-pod,wrangler-dev,pairs=${PAIRS}`;
  const limitHow = "one extra loopback HTTP round trip (GET pod /health), measured in this run";
  const metrics = [
    {
      name: `edge_overhead_ms[p50,${cond}]`,
      value: round(quantile(diff, 0.5)), unit: "ms", better: "lower",
      peer: { name: "direct pod call, p50 latency (ms)", value: round(quantile(d, 0.5)) },
      limit: { value: round(quantile(rtt, 0.5)), how: limitHow },
    },
    {
      name: `edge_overhead_ms[p99,${cond}]`,
      value: round(quantile(diff, 0.99)), unit: "ms", better: "lower",
      peer: { name: "direct pod call, p99 latency (ms)", value: round(quantile(d, 0.99)) },
      limit: { value: round(quantile(rtt, 0.99)), how: limitHow },
    },
    {
      name: `outside_pod_ms[p50,via edge,${cond}]`,
      value: round(quantile(eOut, 0.5)), unit: "ms", better: "lower",
      peer: { name: "direct pod call: latency minus pod time", value: round(quantile(dOut, 0.5)) },
      limit: { value: round(quantile(dOut, 0.5) + quantile(rtt, 0.5)), how: "direct p50 + one loopback round trip" },
    },
    {
      name: `request_latency_ms[p50,via edge,${cond}]`,
      value: round(quantile(e, 0.5)), unit: "ms", better: "lower",
      peer: { name: "direct pod call", value: round(quantile(d, 0.5)) },
      limit: { value: round(quantile(d, 0.5) + quantile(rtt, 0.5)), how: "direct p50 + one loopback round trip" },
    },
    {
      name: `request_latency_ms[p99,via edge,${cond}]`,
      value: round(quantile(e, 0.99)), unit: "ms", better: "lower",
      peer: { name: "direct pod call", value: round(quantile(d, 0.99)) },
      limit: { value: round(quantile(d, 0.99) + quantile(rtt, 0.99)), how: "direct p99 + one loopback round trip" },
    },
  ];
  const result = { topic: "edge", device: cpu, commit, command: `node bench/edge_overhead.mjs --pairs ${PAIRS}`, date, metrics };
  mkdirSync(OUT, { recursive: true });
  let file = join(OUT, `${date}-cpu.json`);
  for (let k = 2; existsSync(file); k++) file = join(OUT, `${date}-cpu-${k}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
  console.log(`edge overhead over a direct pod call (${PAIRS} interleaved pairs, CPU pod, wrangler dev):`);
  console.log(`  p50 ${round(quantile(diff, 0.5))} ms   p99 ${round(quantile(diff, 0.99))} ms   (loopback RTT p50 ${round(quantile(rtt, 0.5))} ms)`);
  console.log(`  latency minus pod time: via edge p50 ${round(quantile(eOut, 0.5))} ms, direct p50 ${round(quantile(dOut, 0.5))} ms`);
  console.log(`  whole latency: via edge p50 ${round(quantile(e, 0.5))} ms, direct p50 ${round(quantile(d, 0.5))} ms`);
  console.log(`  wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
}).finally(stopAll);
