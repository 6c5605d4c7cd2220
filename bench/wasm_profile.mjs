#!/usr/bin/env node
// Where a decode step's time goes, inside workerd, one thread: each kind of kernel call of the
// forward pass, repeated on the real weights (bench/wasm/profile.ts), timed by workerd's CPU
// time around the call (the host is shared), with the count of JS→WASM calls per token.
// Diagnostic print only; the benchmark with peers and limits is bench/wasm_bench.mjs.
//
//   taskset -c 1 node bench/wasm_profile.mjs [tiny15m|smollm2] [--pos N] [--variant simd128|relaxed]
import { join } from "node:path";
import { bundleWorker, cpuSeconds, get, median, putFile, root, withWorker } from "./wasm/harness.mjs";

const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const which = argv[0] && !argv[0].startsWith("--") ? argv[0] : "tiny15m";
const pos = Number(opt("--pos", 384));
const variants = opt("--variant", "simd128,relaxed").split(",");
const path = which === "smollm2" ? join(root, "models/smollm2-135m-instruct-q4_1.gguf") : join(root, ".cache/bench/tiny15m-q4_1.gguf");
const script = await bundleWorker();
for (const variant of variants) {
  await withWorker(script, async (mf, pid) => {
    await putFile(mf, "m.gguf", path);
    await get(mf, `/load?variant=${variant}&key=m.gguf`);
    const list = await get(mf, `/phase?pos=${pos}`);
    const us = [];
    for (let i = 0; i < list.length; i++) {
      // size the repetitions so that one call takes ~0.3 s of CPU (CLK_TCK resolution is 10 ms)
      let reps = 4, cpu = 0, runs = [];
      for (;;) { const c0 = cpuSeconds(pid); await get(mf, `/phase?pos=${pos}&i=${i}&reps=${reps}`); cpu = cpuSeconds(pid) - c0; if (cpu > 0.3) break; reps *= cpu > 0.02 ? Math.ceil(0.4 / cpu) : 8; }
      runs.push(cpu / reps);
      for (let r = 0; r < 2; r++) { const c0 = cpuSeconds(pid); await get(mf, `/phase?pos=${pos}&i=${i}&reps=${reps}`); runs.push((cpuSeconds(pid) - c0) / reps); }
      us.push(median(runs) * 1e6);
    }
    const calls = list.reduce((a, p) => a + p.callsPerToken, 0);
    console.log(`${which} ${variant}: ${list[0].name}: ${us[0].toFixed(0)} us CPU (${(1e6 / us[0]).toFixed(1)} tok/s); ${calls} JS→WASM kernel calls per token`);
    for (let i = 1; i < list.length; i++) console.log(`  ${list[i].name.padEnd(46)} ${String(list[i].callsPerToken).padStart(4)} calls ${us[i].toFixed(1).padStart(9)} us ${(100 * us[i] / us[0]).toFixed(1).padStart(5)}%`);
  });
}
