/** Runs test/workerd/matmat-relaxed-check.ts in workerd (Miniflare): relaxed matmat = relaxed matvec per token, bit for bit. */
import { expect, it } from "vitest";
import { runInWorkerd } from "./workerd-harness";

it("relaxed matmat equals the relaxed matvec token by token inside workerd", async () => {
  const out = await runInWorkerd<{ cases: { kernel: string; nTok: number; rows: number; cols: number; mismatches: number }[] }>(
    "matmat-relaxed-check.ts");
  expect(out.cases.length).toBe(10);
  for (const c of out.cases) expect(c.mismatches, `${c.kernel} ${c.nTok} tokens ${c.rows}x${c.cols}`).toBe(0);
}, 120_000);
