/**
 * Worker run by test/relaxed-workerd.test.ts inside workerd (Miniflare): the relaxed-SIMD build
 * against the scalar references on fresh random inputs, plus the start-up self-check. Node 20
 * computes relaxed_dot wrongly, so this is the only place the relaxed kernels are checked.
 */
// @ts-ignore: a CompiledWasm module supplied by the test
import relaxedModule from "./kernels-relaxed.wasm";
import { instantiateKernels } from "../../src/runtime/kernels";
import { relaxedSelfCheck } from "../../src/runtime/self-check";

export default {
  async fetch(): Promise<Response> {
    const k = (await instantiateKernels(relaxedModule as WebAssembly.Module, "relaxed")).k;
    k.memory.grow(128);
    const base = Math.ceil(k.heap_base() / 64) * 64;
    const selfCheck = relaxedSelfCheck(k, base);
    const cases: { kernel: string; rows: number; cols: number; maxRelErr: number }[] = [];
    for (const [rows, cols] of [[1, 32], [2, 64], [7, 576], [64, 1536], [33, 96]]) {
      for (const [kernel, blockBytes, scales] of [["q4_1", 20, 2], ["q4_0", 18, 1], ["q8_0", 34, 1]] as const) {
        let top = base;
        const alloc = (b: number) => { const p = top; top = Math.ceil((top + b) / 64) * 64; return p; };
        const nb = (rows * cols) / 32;
        const x = alloc(cols * 4), aq = alloc(cols), a16 = alloc(cols * 2), a16p = alloc(cols * 2);
        const ad = alloc(cols / 8), as = alloc(cols / 8), w = alloc(nb * blockBytes), out = alloc(rows * 4), ref = alloc(rows * 4);
        const xs = new Float32Array(k.memory.buffer, x, cols);
        for (let i = 0; i < cols; i++) xs[i] = (Math.random() - 0.5) * 6;
        k.quantize_q8(x, cols, aq, a16, a16p, ad, as);
        const bytes = new Uint8Array(k.memory.buffer, w, nb * blockBytes);
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
        const dv = new DataView(k.memory.buffer);
        for (let b = 0; b < nb; b++) for (let s = 0; s < scales; s++) {
          dv.setUint16(w + b * blockBytes + 2 * s, ((s > 0 && Math.random() < 0.5 ? 1 : 0) << 15) | ((5 + Math.floor(Math.random() * 7)) << 10) | Math.floor(Math.random() * 1024), true);
        }
        if (kernel === "q4_1") { k.matvec_q4_1_fast(w, rows, cols, aq, ad, as, out); k.matvec_q4_1_ref(w, rows, cols, aq, ad, as, ref); }
        else if (kernel === "q4_0") { k.matvec_q4_0_fast(w, rows, cols, aq, ad, as, out); k.matvec_q4_0_ref(w, rows, cols, aq, ad, as, ref); }
        else { k.matvec_q8_0(w, rows, cols, a16, ad, out); k.matvec_q8_0_ref(w, rows, cols, aq, ad, ref); }
        const a = new Float32Array(k.memory.buffer, out, rows), r = new Float32Array(k.memory.buffer, ref, rows);
        let scale = 1e-6, err = 0;
        for (const v of r) scale = Math.max(scale, Math.abs(v));
        for (let i = 0; i < rows; i++) err = Math.max(err, kernel !== "q4_0" && !Object.is(a[i], r[i]) ? Infinity : Math.abs(a[i] - r[i]) / scale);
        cases.push({ kernel, rows, cols, maxRelErr: err });
      }
    }
    return Response.json({ selfCheck, cases });
  },
};
