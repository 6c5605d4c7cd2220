/**
 * The isolate's WASM runtime: kernels + one loaded model, created lazily by the first request
 * (workerd allows no I/O at global scope) behind one shared promise, so concurrent first
 * requests load once. A failed load is forgotten and retried by the next request.
 * The kernels are bundled modules (workerd cannot compile WASM from bytes at run time); the
 * relaxed-SIMD build is used only when it passes its numeric self-check here.
 */
import { instantiateKernels, loadModel, relaxedSelfCheck, type Kernels, type Model, type RuntimeOptions } from "@edgeserve/kernels-wasm/runtime";
import relaxedModule from "@edgeserve/kernels-wasm/kernels-relaxed.wasm";
import simdModule from "@edgeserve/kernels-wasm/kernels-simd.wasm";
import { r2Source } from "./r2-source";
import { Mutex } from "./mutex";

export interface WasmModelConfig {
  /** R2 key of the GGUF in the MODELS bucket. */
  key: string;
  runtime: RuntimeOptions;
}

export interface LoadedRuntime {
  model: Model;
  /** One forward pass at a time: the model has one KV cache. */
  lock: Mutex;
  /** Token ids whose KV is in the cache at positions 0..n-1 (valid while no slot was reused). */
  cached: number[];
  loadMs: number;
}

const loaded = new Map<string, Promise<LoadedRuntime>>();

async function pickKernels(): Promise<Kernels> {
  try {
    const relaxed = await instantiateKernels(relaxedModule, "relaxed");
    if (relaxedSelfCheck(relaxed.k, Math.ceil(relaxed.k.heap_base() / 64) * 64)) return relaxed;
  } catch {
    // engine without relaxed SIMD: fall through to SIMD128
  }
  return instantiateKernels(simdModule, "simd128");
}

async function load(bucket: R2Bucket, cfg: WasmModelConfig): Promise<LoadedRuntime> {
  const t0 = Date.now();
  const model = await loadModel(r2Source(bucket, cfg.key), await pickKernels(), cfg.runtime);
  return { model, lock: new Mutex(), cached: [], loadMs: Date.now() - t0 };
}

export function getRuntime(bucket: R2Bucket, cfg: WasmModelConfig): Promise<LoadedRuntime> {
  let p = loaded.get(cfg.key);
  if (!p) {
    p = load(bucket, cfg);
    loaded.set(cfg.key, p);
    p.catch(() => loaded.delete(cfg.key));
  }
  return p;
}
