/** Runs test/workerd/relaxed-check.ts in workerd (Miniflare) and checks what it reports. */
import { expect, it } from "vitest";
import { runInWorkerd } from "./workerd-harness";

it("relaxed-SIMD kernels equal the scalar references inside workerd", async () => {
  const out = await runInWorkerd<{ selfCheck: boolean; cases: { kernel: string; rows: number; cols: number; maxRelErr: number }[] }>(
    "relaxed-check.ts");
  expect(out.selfCheck).toBe(true);
  expect(out.cases.length).toBe(15);
  // q4_1 and q8_0 must equal the references bit for bit (Infinity otherwise), q4_0 within rounding
  for (const c of out.cases) expect(c.maxRelErr, `${c.kernel} ${c.rows}x${c.cols}`).toBeLessThan(1e-4);
}, 120_000);
