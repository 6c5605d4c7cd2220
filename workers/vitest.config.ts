// Tests run inside workerd through @cloudflare/vitest-pool-workers 0.15 (the `cloudflareTest`
// Vite plugin; 0.15 replaced the old `defineWorkersConfig`). Bindings come from the root
// wrangler.toml; the overrides below give tests keys with small limits.
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "../wrangler.toml" },
      miniflare: {
        bindings: {
          API_KEYS: JSON.stringify([
            { key: "sk-test-main-0000", name: "test-main", rpm: 10_000, tpm: 10_000_000 },
            { key: "sk-test-tiny-0000", name: "test-tiny", rpm: 2, tpm: 100_000 },
            { key: "sk-test-tokens-00", name: "test-tokens", rpm: 1000, tpm: 50 },
          ]),
          POD_SECRET: "test-pod-secret",
        },
      },
    }),
  ],
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    globalSetup: ["./test/global-setup.ts"],
    // The edge logs one JSON line per request; keep test output readable.
    onConsoleLog: (log) => !log.startsWith('{"msg":"request"'),
  },
});
