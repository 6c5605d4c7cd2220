/**
 * Worker run by test/matmat-relaxed-workerd.test.ts inside workerd (Miniflare): the relaxed
 * build's matmat_q4_{1,0}_fast against its matvec_q4_{1,0}_fast token by token (bit for bit).
 * Node 20 computes relaxed_dot wrongly, so this runs in workerd only.
 */
// @ts-ignore: a CompiledWasm module supplied by the test
import relaxedModule from "./kernels-relaxed.wasm";
import { instantiateKernels } from "../../src/runtime/kernels";

export default {
  async fetch(): Promise<Response> {
    const k = (await instantiateKernels(relaxedModule as WebAssembly.Module, "relaxed")).k;
    k.memory.grow(256);
    const base = Math.ceil(k.heap_base() / 64) * 64;
    const cases: { kernel: string; nTok: number; rows: number; cols: number; mismatches: number }[] = [];
    for (const [nTok, rows, cols] of [[1, 1, 32], [3, 7, 64], [16, 200, 576], [4, 1536, 576], [6, 64, 1536]]) {
      for (const [kernel, blockBytes, scales] of [["q4_1", 20, 2], ["q4_0", 18, 1]] as const) {
        let top = base;
        const alloc = (b: number) => { const p = top; top = Math.ceil((top + b) / 64) * 64; return p; };
        const nb = cols / 32;
        const x = alloc(nTok * cols * 4), aq = alloc(nTok * cols), a16 = alloc(nTok * cols * 2), a16p = alloc(nTok * cols * 2);
        const ad = alloc(nTok * nb * 4), as = alloc(nTok * nb * 4), w = alloc(rows * nb * blockBytes), out = alloc(nTok * rows * 4), one = alloc(rows * 4);
        const xs = new Float32Array(k.memory.buffer, x, nTok * cols);
        for (let i = 0; i < xs.length; i++) xs[i] = (Math.random() - 0.5) * 6;
        for (let j = 0; j < nTok; j++) k.quantize_q8(x + j * cols * 4, cols, aq + j * cols, a16 + j * cols * 2, a16p + j * cols * 2, ad + j * nb * 4, as + j * nb * 4);
        const bytes = new Uint8Array(k.memory.buffer, w, rows * nb * blockBytes), dv = new DataView(k.memory.buffer);
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
        for (let b = 0; b < rows * nb; b++) for (let s = 0; s < scales; s++) {
          dv.setUint16(w + b * blockBytes + 2 * s, ((Math.random() < 0.5 ? 1 : 0) << 15) | ((5 + Math.floor(Math.random() * 7)) << 10) | Math.floor(Math.random() * 1024), true);
        }
        if (kernel === "q4_1") k.matmat_q4_1_fast(w, rows, cols, aq, ad, as, out, nTok);
        else k.matmat_q4_0_fast(w, rows, cols, aq, ad, as, out, nTok);
        let mismatches = 0;
        for (let j = 0; j < nTok; j++) {
          if (kernel === "q4_1") k.matvec_q4_1_fast(w, rows, cols, aq + j * cols, ad + j * nb * 4, as + j * nb * 4, one);
          else k.matvec_q4_0_fast(w, rows, cols, aq + j * cols, ad + j * nb * 4, as + j * nb * 4, one);
          const got = new Uint32Array(k.memory.buffer, out + j * rows * 4, rows), want = new Uint32Array(k.memory.buffer, one, rows);
          for (let r = 0; r < rows; r++) if (got[r] !== want[r]) mismatches++;
        }
        cases.push({ kernel, nTok, rows, cols, mismatches });
      }
    }
    return Response.json({ cases });
  },
};
