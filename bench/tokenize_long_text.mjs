#!/usr/bin/env node
// Edge tokenization of long text (A3 item 4): characters per second of SmolLM2's byte-level BPE
// (kernels-wasm/src/tokenizer), on (a) source and prose from this repository, (b) one random
// 100 000-letter word, (c) "hello world " x 40 000. Peer, in the same run on the same text: the
// BPE merge loop this tokenizer used until commit e244200 (rescanning every pair per merge),
// taken from git. Limit: the pre-tokenizer's regex pass alone over the same text (encode cannot
// be faster than splitting the text once). Each figure is the median of 5 runs, a fresh BPE
// model per run (no cache carried over), single thread.
//
//   taskset -c 1 node bench/tokenize_long_text.mjs
//
// Writes bench/results/edge/<date>-<cpu>-tokenize.json (BENCH.md format; a new file per run).
import { build } from "esbuild";
import { execSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const PEER_COMMIT = "e244200";
const cache = join(root, ".cache/bench-tokenize");
mkdirSync(cache, { recursive: true });
writeFileSync(join(cache, "rescan-bpe.ts"), execSync(`git show ${PEER_COMMIT}:kernels-wasm/src/tokenizer/bpe.ts`, { cwd: root }).toString().replace('from "./byte-level"', 'from "../../kernels-wasm/src/tokenizer/byte-level"').replace('from "./pre-tokenizer"', 'from "../../kernels-wasm/src/tokenizer/pre-tokenizer"'));
await build({ entryPoints: [join(root, "bench/tokenize/entry.ts")], bundle: true, platform: "node", format: "esm", outfile: join(cache, "bundle.mjs"), logLevel: "warning" });
const { Tokenizer, BPEModel, RescanBPEModel, preTokenizerFor } = await import(join(cache, "bundle.mjs"));

const data = JSON.parse(readFileSync(join(root, ".cache/tokenizers/smollm2-135m-instruct.json"), "utf8"));
const vocab = new Map();
data.tokens.forEach((t, i) => { if (!vocab.has(t)) vocab.set(t, i); });
const pre = preTokenizerFor(data.pre);

let corpus = "";
for (const dir of ["workers/src/durable", "workers/src/routing", "gpu-backend/edgeserve_pod/engine", "shared/spec"]) {
  for (const f of readdirSync(join(root, dir)).sort()) if (/\.(ts|py|md)$/.test(f)) corpus += readFileSync(join(root, dir, f), "utf8");
}
let x = 12345;
const rnd = (n) => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x % n; };
const word = Array.from({ length: 100_000 }, () => "abcdefghijklmnopqrstuvwxyz"[rnd(26)]).join("");
const texts = [
  { name: "repo source and docs", text: corpus },
  { name: "one random 100000-letter word", text: word },
  { name: "hello world x 40000", text: "hello world ".repeat(40_000) },
];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const REPS = 5;
function time(fn) {
  const ms = [];
  for (let r = 0; r < REPS; r++) {
    const run = fn();
    const t0 = performance.now();
    run();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}
const encodeWith = (Model, text) => () => { const m = new Model(vocab, data.merges, pre, data.unkTokenId); const out = []; return () => m.encode(text, out); };

// Same ids from both before timing anything.
for (const { name, text } of texts) {
  const a = [], b = [];
  new BPEModel(vocab, data.merges, pre, data.unkTokenId).encode(text, a);
  new RescanBPEModel(vocab, data.merges, pre, data.unkTokenId).encode(text, b);
  if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw new Error(`the two BPE loops disagree on ${name}`);
}
const tok = Tokenizer.fromJSON(data);
const metrics = [];
for (const { name, text } of texts) {
  const ours = time(encodeWith(BPEModel, text));
  const peer = time(encodeWith(RescanBPEModel, text));
  const limit = time(() => () => pre(text));
  const perS = (ms) => Math.round(text.length / (ms / 1000));
  metrics.push({
    name: `tokenize_chars_per_s[smollm2,${name},${text.length} chars,${tok.encode(text, { parseSpecial: false }).length} tokens]`,
    value: perS(ours), unit: "chars/s", better: "higher",
    ms: Math.round(ours * 10) / 10,
    peer: { name: `rescanning BPE loop (${PEER_COMMIT})`, value: perS(peer), ms: Math.round(peer * 10) / 10 },
    limit: { value: perS(limit), how: "the pre-tokenizer's regex pass alone over the same text, measured in this run" },
  });
  console.log(`${name}: ${ours.toFixed(1)} ms (peer ${peer.toFixed(1)} ms, regex pass ${limit.toFixed(1)} ms)`);
}

const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))[1].trim();
const slug = cpu.toLowerCase().replace(/\(r\)|\(tm\)|cpu|@.*$/g, "").trim().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
const date = new Date().toISOString().slice(0, 10);
let commit = "unknown", dirty = "";
try { commit = execSync("git rev-parse HEAD", { cwd: root }).toString().trim(); } catch {}
try { dirty = execSync("git status --porcelain kernels-wasm/src/tokenizer bench/tokenize bench/tokenize_long_text.mjs", { cwd: root }).toString().trim(); } catch {}
const dir = join(root, "bench/results/edge");
mkdirSync(dir, { recursive: true });
let file = join(dir, `${date}-${slug}-tokenize.json`);
for (let i = 2; existsSync(file); i++) file = join(dir, `${date}-${slug}-tokenize-${i}.json`);
const affinity = (() => { try { return execSync(`taskset -p ${process.pid}`).toString().trim(); } catch { return "?"; } })();
writeFileSync(file, JSON.stringify({
  topic: "edge", device: cpu, commit, command: "taskset -c 1 node bench/tokenize_long_text.mjs", date,
  conditions: { node: process.version, affinity, load_average: readFileSync("/proc/loadavg", "utf8").trim(), uncommitted_changes_in_measured_code: dirty ? dirty.split("\n") : [], host: "2 vCPUs shared with other sessions; Node, not workerd (same V8 family)" },
  metrics,
}, null, 2) + "\n");
console.log(`wrote ${file}`);
