/**
 * The sampler the runtime used before partial selection (kernels-wasm/src/runtime/sampler.ts at
 * 60569f2, top-p measured against the whole vocabulary): every candidate within 1e-9 of the top
 * token sorted by a JS comparator per step. The peer of the sampled-decode row of wasm_bench.
 */
export class SortSampler {
  private state: number;
  private idx: Int32Array;
  private probs: Float32Array;

  constructor(private readonly o: { temperature: number; topP: number; topK: number; seed: number }, vocabSize: number) {
    this.state = o.seed >>> 0;
    this.idx = new Int32Array(vocabSize);
    this.probs = new Float32Array(vocabSize);
  }

  sample(logits: Float32Array): number {
    const n = logits.length;
    const invT = 1 / this.o.temperature;
    let mx = -Infinity;
    for (let i = 0; i < n; i++) if (logits[i] > mx) mx = logits[i];
    let sum = 0, c = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp((logits[i] - mx) * invT);
      this.probs[i] = e;
      sum += e;
      if (e > 1e-9) this.idx[c++] = i;
    }
    const cand = this.idx.subarray(0, c).sort((a, b) => this.probs[b] - this.probs[a]);
    let m = this.o.topK > 0 ? Math.min(this.o.topK, c) : c;
    let acc = 0;
    for (let i = 0; i < m; i++) { acc += this.probs[cand[i]] / sum; if (acc >= this.o.topP) { m = i + 1; break; } }
    let mass = 0;
    for (let i = 0; i < m; i++) mass += this.probs[cand[i]];
    let r = this.next() * mass;
    for (let i = 0; i < m; i++) { r -= this.probs[cand[i]]; if (r <= 0) return cand[i]; }
    return cand[m - 1];
  }

  private next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}
