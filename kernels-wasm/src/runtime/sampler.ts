/**
 * Next-token choice from logits: greedy (temperature 0), else temperature → top-k → top-p
 * sampling with a seeded generator (mulberry32) so a seed reproduces a completion.
 *
 * top-p is measured within the top-k set (its probabilities renormalised to sum to 1), as the
 * pod's sampler, vLLM, HF and llama.cpp do. The draw walks tokens from the most probable down,
 * ties by lower id (the order of the stable sort this sampler used before, so a seed draws the
 * same tokens as then), without sorting the vocabulary: with no cut, masses bucketed by the
 * probabilities' top bits say where the walk stops (O(vocab), see pick); with top-k / top-p, a
 * binary heap yields the kept tokens in order (O(vocab) to build, O(log vocab) per token taken).
 * Scratch arrays are allocated once per sampler, not per token.
 */
export interface SamplerOptions {
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  /** An integer in [0, 2^53); absent: random. */
  seed?: number;
}

/** Tokens under this fraction of the top one are never drawn (≤ 5e-5 of the mass over 49k tokens). */
const MIN_REL_PROB = 1e-9;
/** Probabilities are ≤ 1 (relative to the top token): f32 bits ≤ 0x3f800000, top 16 bits ≤ 0x3f80. */
const BUCKETS = 0x3f81;

export class Sampler {
  /** mulberry32's counter: the seed's low 32 bits. */
  private state: number;
  /** The seed's high bits, mixed into every draw; 0 below 2^32, so those seeds keep their streams. */
  private readonly key: number;
  /** Candidates (token ids) as a max-heap by (probs desc, id asc), then taken from its end. (vocab) */
  private readonly heap: Int32Array;
  /** exp((logit - max) / T) as f32, 0 for tokens that are not candidates. (vocab) */
  private readonly probs: Float32Array;
  /** The bits of probs. (vocab) */
  private readonly bits: Uint32Array;
  /** Candidate mass per top-16-bit pattern of their probability. (BUCKETS) */
  private readonly bucketMass = new Float64Array(BUCKETS);

  constructor(private readonly o: SamplerOptions, vocabSize: number) {
    if (!(o.temperature >= 0)) throw new Error(`temperature must be ≥ 0, got ${o.temperature}`);
    if (!(o.topP > 0 && o.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${o.topP}`);
    if (!Number.isInteger(o.topK) || o.topK < 0) throw new Error(`topK must be an integer ≥ 0, got ${o.topK}`);
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 53);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be an integer in [0, 2^53), got ${seed}`);
    this.state = seed >>> 0;
    // hi < 2^21: multiplying by an odd constant mod 2^31 is one to one, so distinct seeds give
    // distinct (counter, key) pairs; the key's top bit stays 0, so no two keys differ by 2^31
    // alone, the one xor that a shifted counter could undo for every draw.
    this.key = Math.imul(Math.floor(seed / 2 ** 32), 0x9e3779b1) & 0x7fffffff;
    this.heap = new Int32Array(vocabSize);
    this.probs = new Float32Array(vocabSize);
    this.bits = new Uint32Array(this.probs.buffer);
  }

  sample(logits: Float32Array): number {
    if (this.o.temperature === 0) return argmax(logits);
    const { probs, heap } = this;
    const n = logits.length;
    const invT = 1 / this.o.temperature;
    let mx = -Infinity;
    for (let i = 0; i < n; i++) if (logits[i] > mx) mx = logits[i];
    const { bits, bucketMass } = this;
    bucketMass.fill(0);
    let sum = 0, cand = 0, candMass = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp((logits[i] - mx) * invT);
      probs[i] = e;
      sum += e;
      if (e > MIN_REL_PROB) { heap[cand++] = i; candMass += probs[i]; bucketMass[bits[i] >>> 16] += probs[i]; }
      else probs[i] = 0; // not a candidate: never drawn (pick's buckets skip it)
    }
    if (cand === 0) return argmax(logits); // NaN or all -inf: nothing to weigh
    const k = this.o.topK > 0 ? Math.min(this.o.topK, cand) : cand;
    if (k === cand && this.o.topP >= 1) return this.pick(this.next() * candMass);
    for (let i = (cand >> 1) - 1; i >= 0; i--) this.siftDown(i, cand);
    // Taken tokens go to the end of `heap`, most probable first: heap[n - 1], heap[n - 2], …
    let live = cand, taken = 0;
    const take = () => {
      const top = heap[0];
      heap[0] = heap[--live];
      this.siftDown(0, live);
      heap[n - 1 - taken++] = top;
      return top;
    };
    // The kept set: the top k (all candidates when top-k is off), then the fewest of them, most
    // probable first, whose share of the set's mass reaches topP.
    let setMass = sum;
    if (k < cand) { setMass = 0; for (let i = 0; i < k; i++) setMass += probs[take()]; }
    let m = k, acc = 0;
    for (let i = 0; i < k; i++) {
      const id = i < taken ? heap[n - 1 - i] : take();
      acc += probs[id] / setMass;
      if (acc >= this.o.topP) { m = i + 1; break; }
    }
    let mass = 0;
    for (let i = 0; i < m; i++) mass += probs[heap[n - 1 - i]];
    let r = this.next() * mass;
    for (let i = 0; i < m; i++) { const id = heap[n - 1 - i]; r -= probs[id]; if (r <= 0) return id; }
    return heap[n - m];
  }

  /**
   * The candidate at which a walk down (probability desc, id asc) order, subtracting each
   * probability from r, reaches 0: the token the sorting sampler drew. Positive f32s order as
   * their bits do, so the top 16 bits (exponent and 7 mantissa bits) bucket the candidates in
   * order: the bucket masses (summed in the exp pass) say which bucket the walk stops in, and only
   * that bucket's few tokens are sorted. O(vocab) and no sort of the vocabulary.
   */
  private pick(r: number): number {
    const { probs, bits, bucketMass } = this;
    let key = BUCKETS - 1, lastKey = -1;
    for (; key >= 0; key--) {
      const m = bucketMass[key];
      if (m === 0) continue;
      lastKey = key;
      if (r <= m) break;
      r -= m;
    }
    if (key < 0) { key = lastKey; r = Infinity; } // rounding left r > 0: the least probable candidate
    const inBucket: number[] = [];
    for (let i = 0; i < probs.length; i++) if (bits[i] >>> 16 === key && probs[i] > 0) inBucket.push(i);
    inBucket.sort((x, y) => probs[y] - probs[x] || x - y);
    for (const id of inBucket) { r -= probs[id]; if (r <= 0) return id; }
    return inBucket[inBucket.length - 1];
  }

  /** Restores the max-heap below i in heap[0, size). */
  private siftDown(i: number, size: number): void {
    const { heap, probs } = this;
    const x = heap[i], px = probs[x];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= size) break;
      const r = c + 1;
      if (r < size && (probs[heap[r]] > probs[heap[c]] || (probs[heap[r]] === probs[heap[c]] && heap[r] < heap[c]))) c = r;
      const y = heap[c], py = probs[y];
      if (px > py || (px === py && x < y)) break;
      heap[i] = y;
      i = c;
    }
    heap[i] = x;
  }

  private next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0) ^ this.key;
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
