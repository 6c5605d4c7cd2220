/** A GGUF in R2 as a ModelSource: ranged GETs, the body streamed (BYOB-capable in workerd). */
import type { ModelSource } from "@edgeserve/kernels-wasm/runtime";

export class ModelNotInstalledError extends Error {}

export function r2Source(bucket: R2Bucket, key: string): ModelSource {
  return {
    async read(offset, length) {
      const obj = await bucket.get(key, { range: length === undefined ? { offset } : { offset, length } });
      if (!obj) throw new ModelNotInstalledError(`R2 object ${key} is missing (make dev seeds it: kernels-wasm/scripts/seed-r2.sh)`);
      return obj.body;
    },
  };
}
