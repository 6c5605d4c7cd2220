/**
 * Next-token choice from logits: greedy (temperature 0), else temperature → top-k → top-p
 * sampling with a seeded generator (mulberry32) so a seed reproduces a completion.
 * Scratch arrays are allocated once per sampler, not per token.
 */
export interface SamplerOptions {
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  seed?: number;
}

export class Sampler {
  private state: number;
  private idx: Int32Array;
  private probs: Float32Array;

  constructor(private readonly o: SamplerOptions, vocabSize: number) {
    if (!(o.temperature >= 0)) throw new Error(`temperature must be ≥ 0, got ${o.temperature}`);
    if (!(o.topP > 0 && o.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${o.topP}`);
    if (!Number.isInteger(o.topK) || o.topK < 0) throw new Error(`topK must be an integer ≥ 0, got ${o.topK}`);
    this.state = (o.seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
    this.idx = new Int32Array(vocabSize);
    this.probs = new Float32Array(vocabSize);
  }

  sample(logits: Float32Array): number {
    if (this.o.temperature === 0) return argmax(logits);
    const n = logits.length;
    const invT = 1 / this.o.temperature;
    let mx = -Infinity;
    for (let i = 0; i < n; i++) if (logits[i] > mx) mx = logits[i];
    let sum = 0;
    // Tokens under 1e-9 of the top one are dropped before sorting (≤ 5e-5 of the mass over a
    // 49k vocabulary): sorting the whole vocabulary would cost more than the forward pass.
    let c = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp((logits[i] - mx) * invT);
      this.probs[i] = e;
      sum += e;
      if (e > 1e-9) this.idx[c++] = i;
    }
    const cand = this.idx.subarray(0, c).sort((a, b) => this.probs[b] - this.probs[a]);
    let m = this.o.topK > 0 ? Math.min(this.o.topK, c) : c;
    let acc = 0;
    for (let i = 0; i < m; i++) {
      acc += this.probs[cand[i]] / sum;
      if (acc >= this.o.topP) { m = i + 1; break; }
    }
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

/** Index of the largest logit; the lowest index on ties (as llama.cpp's greedy sampler). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}
