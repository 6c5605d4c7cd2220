// End-to-end: real workerd (wrangler dev) + the real Python pod on CPU, driven by the official
// openai client. Runs in Node; the suite starts and stops every process itself.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["e2e/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 150_000,
    // One edge and one pod for the whole suite: files run one after another.
    fileParallelism: false,
  },
});
