// How often does local workerd (wrangler dev) fail to report a dropped WASM stream? Drops a
// streamed answer after 3 content chunks (node fetch aborted, or curl killed), then times a
// 1-token request at once: reported -> the runtime is free now (~0.1 s); unreported -> it waits
// for the lock's idle bound (WASM_MAX_IDLE_MS, default 2 s). Not a test; a measurement:
//   node test/e2e/measure-drops.mjs [N=10] [fetch|curl]
// Needs `make deps models` (wrangler, the GGUF) and the tokenizer in .cache/ (the e2e exports it).
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
const ROOT = resolve(import.meta.dirname, "../.."), W = join(ROOT, "node_modules/.bin/wrangler");
const N = Number(process.argv[2] ?? 10), MODE = process.argv[3] ?? "fetch", PORT = 8790 + Math.floor(Math.random() * 100);
const state = mkdtempSync(join(tmpdir(), "f3-drops-"));
const put = (k, f) => execFileSync(W, ["r2", "object", "put", `edgeserve-models/${k}`, "--file", f, "--local", "--persist-to", state], { cwd: ROOT, stdio: "pipe" });
put("tokenizers/smollm2-135m-instruct.json", join(ROOT, ".cache/tokenizers/smollm2-135m-instruct.json"));
put("models/smollm2-135m-instruct-q4_1.gguf", join(ROOT, "models/smollm2-135m-instruct-q4_1.gguf"));
const wr = spawn(W, ["dev", "--ip", "127.0.0.1", "--port", String(PORT), "--persist-to", state, "--log-level", "warn"], { cwd: ROOT, stdio: "ignore", detached: true });
const url = `http://127.0.0.1:${PORT}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; ; i++) { try { if ((await fetch(`${url}/health`)).ok) break; } catch {} if (i > 120) throw new Error("no wrangler"); await sleep(500); }
const body = (max, stream) => JSON.stringify({ model: "smollm2-135m-instruct", messages: [{ role: "user", content: "Write a long story about a fox." }], max_tokens: max, temperature: 0, stream });
const post = (b, signal) => fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { authorization: "Bearer sk-edgeserve-local", "content-type": "application/json" }, body: b, signal });
async function quick() { const t0 = Date.now(); const r = await post(body(1, false)); await r.text(); return { ms: Date.now() - t0, status: r.status }; }
async function dropFetch() {
  const ctl = new AbortController(); const res = await post(body(400, true), ctl.signal);
  const rd = res.body.getReader(); const dec = new TextDecoder(); let n = 0, buf = "";
  while (n < 3) { const { value, done } = await rd.read(); if (done) break; buf += dec.decode(value); n = (buf.match(/"content":"[^"]/g) || []).length; }
  ctl.abort();
}
async function dropCurl() {
  const c = spawn("curl", ["-sN", `${url}/v1/chat/completions`, "-H", "authorization: Bearer sk-edgeserve-local", "-H", "content-type: application/json", "-d", body(400, true)]);
  let buf = ""; await new Promise((r) => c.stdout.on("data", (d) => { buf += d; if ((buf.match(/"content":"[^"]/g) || []).length >= 3) r(); }));
  c.kill("SIGKILL");
}
console.log("warm", await quick());
const rows = [];
for (let i = 0; i < N; i++) {
  await (MODE === "curl" ? dropCurl() : dropFetch());
  const q = await quick(); rows.push(q.ms); console.log(i, MODE, q);
  await sleep(2500); // let any held lock expire before the next drop
}
const slow = rows.filter((ms) => ms >= 1500).length;
console.log(JSON.stringify({ mode: MODE, n: N, next_ms: rows, unreported: slow }));
process.kill(-wr.pid, "SIGTERM");
