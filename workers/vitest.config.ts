// Tests run inside workerd through @cloudflare/vitest-pool-workers 0.15 (the `cloudflareTest`
// Vite plugin; 0.15 replaced the old `defineWorkersConfig`). Bindings come from the root
// wrangler.toml; the overrides below give tests keys with small limits.
import { resolve } from "node:path";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

const here = __dirname;

export default defineConfig({
  // The repository root, so that modules of sibling workspaces (kernels-wasm's .wasm files)
  // resolve inside the project instead of as /@fs/ paths the pool cannot load.
  root: resolve(here, ".."),
  plugins: [
    cloudflareTest({
      wrangler: { configPath: resolve(here, "../wrangler.toml") },
      miniflare: {
        bindings: {
          API_KEYS: JSON.stringify([
            { key: "sk-test-main-0000", name: "test-main", rpm: 10_000, tpm: 10_000_000 },
            { key: "sk-test-tiny-0000", name: "test-tiny", rpm: 2, tpm: 100_000 },
            { key: "sk-test-tokens-00", name: "test-tokens", rpm: 1000, tpm: 50 },
            { key: "sk-test-early-000", name: "test-early", rpm: 1, tpm: 100_000 },
          ]),
          POD_SECRET: "test-pod-secret",
        },
      },
    }),
  ],
  test: {
    include: ["workers/src/**/*.test.ts", "workers/test/**/*.test.ts"],
    globalSetup: [resolve(here, "test/global-setup.ts")],
    // A file's first request loads the Worker (and compiles the WASM kernels): seconds on a busy
    // 2-core CI machine.
    testTimeout: 30_000,
    // The edge logs one JSON line per request; keep test output readable.
    onConsoleLog: (log) => !log.startsWith('{"msg":"request"'),
  },
});
