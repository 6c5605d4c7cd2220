/**
 * The stack under test: the edge in `wrangler dev` (real workerd, local R2 seeded with the real
 * tokenizer) and, when asked, the real Python pod on CPU serving SmolLM2-135M-Instruct, which
 * registers itself with the edge. Set E2E_POD=0 to skip the pod.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, start, waitFor, type Proc } from "./procs";

export const ROOT = resolve(__dirname, "../..");
export const MODEL = "smollm2-135m-instruct";
/** The documented local-dev key and pod secret (wrangler.toml [vars]). */
export const DEV_KEY = "sk-edgeserve-local";
export const DEV_POD_SECRET = "edgeserve-dev-pod-secret";

const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
const GGUF = join(ROOT, "models/smollm2-135m-instruct-q4_1.gguf");
const HF_DIR = join(ROOT, "models/smollm2-135m-instruct-hf");
const TOKENIZER = join(ROOT, ".cache/tokenizers/smollm2-135m-instruct.json");
const POD_BIN = join(ROOT, ".venv/bin/edgeserve-pod");
const PY = join(ROOT, ".venv/bin/python");

export interface Edge {
  url: string;
  proc: Proc;
  stop: () => Promise<void>;
}

/** The tokenizer JSON, exported from the GGUF by kernels-wasm's script when missing. */
function ensureTokenizer(): string {
  if (!existsSync(TOKENIZER)) {
    execFileSync(process.execPath, [join(ROOT, "kernels-wasm/scripts/export-tokenizer.mjs"), GGUF, TOKENIZER], { stdio: "inherit" });
  }
  return TOKENIZER;
}

/** Local R2 as kernels-wasm/scripts/seed-r2.sh fills it: the tokenizer and the WASM runtime's weights. */
function seedR2(state: string): void {
  const put = (key: string, file: string) =>
    execFileSync(WRANGLER, ["r2", "object", "put", `edgeserve-models/${key}`, "--file", file, "--local", "--persist-to", state], { cwd: ROOT, stdio: "pipe" });
  put(`tokenizers/${MODEL}.json`, ensureTokenizer());
  put("models/smollm2-135m-instruct-q4_1.gguf", GGUF);
}

/** `vars` override wrangler.toml's [vars] (wrangler dev --var NAME:VALUE). */
export async function startEdge(vars: Record<string, string> = {}): Promise<Edge> {
  const state = mkdtempSync(join(tmpdir(), "edgeserve-e2e-"));
  seedR2(state);
  const port = await freePort();
  const varArgs = Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  const proc = start(WRANGLER, ["dev", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", state, "--log-level", "warn", ...varArgs], { cwd: ROOT });
  const url = `http://127.0.0.1:${port}`;
  await waitFor("wrangler dev", async () => ((await fetch(`${url}/health`)).ok ? true : undefined), 60_000, proc);
  return {
    url,
    proc,
    stop: async () => {
      await proc.stop();
      rmSync(state, { recursive: true, force: true });
    },
  };
}

export function podAvailable(): boolean {
  return process.env.E2E_POD !== "0" && existsSync(POD_BIN) && existsSync(GGUF);
}

/** The pod wants an HF folder; the GGUF is converted once (about a minute) and kept in models/. */
function ensureHfModel(): string {
  if (!existsSync(join(HF_DIR, "model.safetensors"))) {
    execFileSync(PY, ["-m", "edgeserve_pod.tools.gguf_to_hf", GGUF, HF_DIR], { cwd: ROOT, stdio: "inherit" });
  }
  return HF_DIR;
}

export interface Pod {
  url: string;
  podId: string;
  proc: Proc;
  stop: () => Promise<void>;
}

/** Starts the real pod and waits until the edge lists it as live. */
export async function startPod(edge: Edge, podId = "pod-e2e"): Promise<Pod> {
  const port = await freePort();
  const proc = start(
    POD_BIN,
    ["--model", ensureHfModel(), "--device", "cpu", "--port", String(port), "--model-id", MODEL, "--pod-id", podId, "--edge-url", edge.url, "--pod-secret", DEV_POD_SECRET, "--drain-timeout-s", "1"],
    { cwd: ROOT },
  );
  await waitFor(
    "pod registered with the edge",
    async () => {
      const h = (await (await fetch(`${edge.url}/health`)).json()) as { models: Record<string, { live_pods: string[] }> };
      return h.models[MODEL].live_pods.includes(podId) ? true : undefined;
    },
    120_000,
    proc,
  );
  return { url: `http://127.0.0.1:${port}`, podId, proc, stop: () => proc.stop() };
}
