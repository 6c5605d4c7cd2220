#!/usr/bin/env node
// Edge tokenization of long text (A3 item 4): characters per second of SmolLM2's byte-level BPE
// (kernels-wasm/src/tokenizer), on (a) source and prose from this repository, (b) one random
// 100 000-letter word, (c) "hello world " x 40 000. Peer, in the same run on the same text: the
// BPE merge loop this tokenizer used until commit e244200 (rescanning every pair per merge),
// taken from git. Limit: the pre-tokenizer's regex pass alone over the same text (encode cannot
// be faster than splitting the text once). Each figure is the median of 5 runs, a fresh BPE
// model per run (no cache carried over), single thread. Also, as `previous`, the tokenizer of
// commit 60569f2 (string-keyed merges, before the id-keyed merge table): its BPE speed on the same
// texts, and the time and retained memory (JS heap + ArrayBuffers, after GC) of Tokenizer.fromJSON.
//
//   taskset -c 1 node --expose-gc bench/tokenize_long_text.mjs
//
// Writes bench/results/edge/<date>-<cpu>-tokenize.json (BENCH.md format; a new file per run).
import { build } from "esbuild";
import { execSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const PEER_COMMIT = "e244200";
const PREV_COMMIT = "60569f2";
const cache = join(root, ".cache/bench-tokenize");
mkdirSync(cache, { recursive: true });
writeFileSync(join(cache, "rescan-bpe.ts"), execSync(`git show ${PEER_COMMIT}:kernels-wasm/src/tokenizer/bpe.ts`, { cwd: root }).toString().replace('from "./byte-level"', 'from "../../kernels-wasm/src/tokenizer/byte-level"').replace('from "./pre-tokenizer"', 'from "../../kernels-wasm/src/tokenizer/pre-tokenizer"'));
mkdirSync(join(cache, "prev"), { recursive: true });
execSync(`git archive ${PREV_COMMIT} kernels-wasm/src/tokenizer kernels-wasm/src/gguf | tar -x -C ${join(cache, "prev")}`, { cwd: root });
await build({ entryPoints: [join(root, "bench/tokenize/entry.ts")], bundle: true, platform: "node", format: "esm", outfile: join(cache, "bundle.mjs"), logLevel: "warning" });
const { Tokenizer, BPEModel, RescanBPEModel, preTokenizerFor, PrevTokenizer, PrevBPEModel } = await import(join(cache, "bundle.mjs"));
const gc = globalThis.gc;
if (!gc) throw new Error("run with node --expose-gc (see the header)");

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
// the BPE of today takes the token strings; the older two a string → id map
const encodeWith = (Model, text) => () => { const m = Model === BPEModel ? new Model(data.tokens, data.merges, pre, data.unkTokenId) : new Model(vocab, data.merges, pre, data.unkTokenId); const out = []; return () => m.encode(text, out); };

// Same ids from both before timing anything.
for (const { name, text } of texts) {
  const a = [], b = [];
  const c = [];
  new BPEModel(data.tokens, data.merges, pre, data.unkTokenId).encode(text, a);
  new RescanBPEModel(vocab, data.merges, pre, data.unkTokenId).encode(text, b);
  new PrevBPEModel(vocab, data.merges, pre, data.unkTokenId).encode(text, c);
  if (a.length !== b.length || a.some((v, i) => v !== b[i] || v !== c[i])) throw new Error(`the BPE loops disagree on ${name}`);
}
const tok = Tokenizer.fromJSON(data);
const metrics = [];
for (const { name, text } of texts) {
  const ours = time(encodeWith(BPEModel, text));
  const peer = time(encodeWith(RescanBPEModel, text));
  const prev = time(encodeWith(PrevBPEModel, text));
  const limit = time(() => () => pre(text));
  const perS = (ms) => Math.round(text.length / (ms / 1000));
  metrics.push({
    name: `tokenize_chars_per_s[smollm2,${name},${text.length} chars,${tok.encode(text, { parseSpecial: false }).length} tokens]`,
    value: perS(ours), unit: "chars/s", better: "higher",
    ms: Math.round(ours * 10) / 10,
    peer: { name: `rescanning BPE loop (${PEER_COMMIT})`, value: perS(peer), ms: Math.round(peer * 10) / 10 },
    limit: { value: perS(limit), how: "the pre-tokenizer's regex pass alone over the same text, measured in this run" },
    previous: { name: `string-keyed heap BPE (${PREV_COMMIT})`, value: perS(prev), ms: Math.round(prev * 10) / 10 },
  });
  console.log(`${name}: ${ours.toFixed(1)} ms (peer ${peer.toFixed(1)} ms, ${PREV_COMMIT} ${prev.toFixed(1)} ms, regex pass ${limit.toFixed(1)} ms)`);
}

// Tokenizer.fromJSON: time and what it keeps (JS heap + ArrayBuffer backing stores after GC),
// today's against 60569f2's, each from a fresh JSON.parse of the same text.
const jsonText = readFileSync(join(root, ".cache/tokenizers/smollm2-135m-instruct.json"), "utf8");
const retained = () => { gc(); gc(); const u = process.memoryUsage(); return u.heapUsed + u.arrayBuffers; };
function load(T) {
  const ms = [], mib = [];
  for (let r = 0; r < REPS; r++) {
    const m0 = retained();
    let parsed = JSON.parse(jsonText);
    const t0 = performance.now();
    let t = T.fromJSON(parsed);
    ms.push(performance.now() - t0);
    parsed = null; // garbage from here on, unless the tokenizer keeps it
    t.encode("warm up 123");
    const m1 = retained();
    mib.push((m1 - m0) / 1048576);
    t = null;
  }
  return { ms: median(ms), mib: median(mib) };
}
const ld = load(Tokenizer), ldPrev = load(PrevTokenizer);
metrics.push({
  name: "tokenizer_load_ms[smollm2,Tokenizer.fromJSON]", value: Math.round(ld.ms * 10) / 10, unit: "ms", better: "lower",
  peer: { name: `Tokenizer.fromJSON of ${PREV_COMMIT}`, value: Math.round(ldPrev.ms * 10) / 10 }, note: "from an already parsed JSON; median of 5",
});
metrics.push({
  name: "tokenizer_retained_mb[smollm2,JS heap + ArrayBuffers]", value: +ld.mib.toFixed(2), unit: "MB", better: "lower",
  peer: { name: `Tokenizer.fromJSON of ${PREV_COMMIT}`, value: +ldPrev.mib.toFixed(2) },
  note: "process heapUsed + arrayBuffers after a full GC: with the tokenizer alive (its JSON dropped by the caller) minus before JSON.parse, MiB; median of 5",
});
console.log(`Tokenizer.fromJSON: ${ld.ms.toFixed(1)} ms, keeps ${ld.mib.toFixed(2)} MiB (${PREV_COMMIT}: ${ldPrev.ms.toFixed(1)} ms, ${ldPrev.mib.toFixed(2)} MiB)`);

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
  topic: "edge", device: cpu, commit, command: "taskset -c 1 node --expose-gc bench/tokenize_long_text.mjs", date,
  conditions: { node: process.version, affinity, load_average: readFileSync("/proc/loadavg", "utf8").trim(), uncommitted_changes_in_measured_code: dirty ? dirty.split("\n") : [], host: "2 vCPUs shared with other sessions; Node, not workerd (same V8 family)" },
  metrics,
}, null, 2) + "\n");
console.log(`wrote ${file}`);
