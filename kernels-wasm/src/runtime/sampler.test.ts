import { describe, expect, it } from "vitest";
import { SortSampler as SortingSampler } from "../../../bench/wasm/sort-sampler";
import { Sampler } from "./sampler";

// The reference for "same seed, same tokens": the sampler as it was before partial selection (commit
// 60569f2; every candidate sorted, top-p measured against the whole vocabulary), kept once in the
// bench, where it is also the sampled-decode row's peer.

/** LM-like logits: a few strong tokens over a long tail, and repeated values (ties). */
function logitsLike(V: number, seed: number): Float32Array {
  let x = seed;
  const u = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const l = new Float32Array(V);
  for (let i = 0; i < V; i++) l[i] = Math.round((u() * 8 - 4) * 4) / 4; // ties on a 1/4 grid
  for (let j = 0; j < 8; j++) l[Math.floor(u() * V)] = 4 + u() * 8;
  return l;
}

const pool = new Map<number, Float32Array[]>();
function draws(s: { sample(l: Float32Array): number }, n: number, V: number): number[] {
  if (!pool.has(V)) pool.set(V, Array.from({ length: 64 }, (_, i) => logitsLike(V, 1000 + i)));
  const ls = pool.get(V)!;
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(s.sample(ls[i % ls.length]));
  return out;
}

describe("Sampler", () => {
  it("draws the tokens the sorting sampler drew for the same seed, where top-k / top-p did not combine", () => {
    // Same visiting order (probability desc, id asc) and the same cumulative mass: the same
    // token. With no cut, the drawn mass is summed in id order rather than sorted order, which can
    // move a boundary by ~1e-16: no draw here lands there.
    const V = 4096;
    for (const o of [
      { temperature: 1, topP: 1, topK: 0 }, { temperature: 2, topP: 1, topK: 0 }, { temperature: 0.7, topP: 1, topK: 0 },
      { temperature: 1, topP: 0.9, topK: 0 }, { temperature: 1.5, topP: 0.5, topK: 0 },
      { temperature: 1, topP: 1, topK: 40 }, { temperature: 1, topP: 1, topK: 1 },
    ]) {
      for (const seed of [7, 4294967295]) {
        const ours = draws(new Sampler({ ...o, seed }, V), 64, V);
        expect(ours, JSON.stringify({ ...o, seed })).toEqual(draws(new SortingSampler({ ...o, seed }, V), 64, V));
        if (o.topK !== 1) expect(new Set(ours).size).toBeGreaterThan(4); // the draws do vary
      }
    }
  });

  it("measures top_p within the top_k set (A4 item 8: probs .3 .2 .1x5, top_k 2, top_p 0.5 → only token 0)", () => {
    const p = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1];
    const logits = new Float32Array(p.map(Math.log));
    const s = new Sampler({ temperature: 1, topP: 0.5, topK: 2, seed: 1 }, p.length);
    const counts = new Array(p.length).fill(0);
    for (let i = 0; i < 10_000; i++) counts[s.sample(logits)]++;
    // top-2 renormalised: 0.6, 0.4; 0.6 ≥ 0.5 keeps token 0 alone (the pod's sampler.py:58-63)
    expect(counts).toEqual([10_000, 0, 0, 0, 0, 0, 0]);
    // top_p 0.7 of the top-2 set keeps both, drawn 0.6 / 0.4
    const both = new Sampler({ temperature: 1, topP: 0.7, topK: 2, seed: 1 }, p.length);
    const c2 = new Array(p.length).fill(0);
    for (let i = 0; i < 10_000; i++) c2[both.sample(logits)]++;
    expect(c2.slice(2).every((c) => c === 0)).toBe(true);
    expect(Math.abs(c2[0] / 10_000 - 0.6)).toBeLessThan(0.02);
  });

  it("draws each token with its kept probability (chi-square, fixed seed)", () => {
    const p = [0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05, 0.03, 0.015, 0.005];
    const logits = new Float32Array(p.map((x) => Math.log(x) * 0.5)); // temperature 0.5 undoes the 0.5
    const N = 40_000;
    for (const { topK, topP, kept } of [
      { topK: 0, topP: 1, kept: 10 }, { topK: 4, topP: 1, kept: 4 }, { topK: 0, topP: 0.8, kept: 5 }, { topK: 6, topP: 0.7, kept: 4 },
    ]) {
      const s = new Sampler({ temperature: 0.5, topP, topK, seed: 99 }, p.length);
      const counts = new Array(p.length).fill(0);
      for (let i = 0; i < N; i++) counts[s.sample(logits)]++;
      const mass = p.slice(0, kept).reduce((a, b) => a + b, 0);
      let chi2 = 0;
      for (let i = 0; i < kept; i++) { const e = (N * p[i]) / mass; chi2 += (counts[i] - e) ** 2 / e; }
      expect(counts.slice(kept).every((c) => c === 0), `top_k ${topK} top_p ${topP}`).toBe(true);
      // 99.9th percentile of chi-square with kept - 1 ≤ 9 degrees of freedom is ≤ 27.9
      expect(chi2, `top_k ${topK} top_p ${topP}: ${counts}`).toBeLessThan(27.9);
    }
  });

  it("uses the whole seed: 7 and 2^32 + 7 differ, seeds below 2^32 keep their stream", () => {
    const V = 4096, o = { temperature: 1, topP: 1, topK: 0 };
    const a = draws(new Sampler({ ...o, seed: 7 }, V), 50, V);
    expect(draws(new Sampler({ ...o, seed: 4294967303 }, V), 50, V)).not.toEqual(a);
    expect(draws(new Sampler({ ...o, seed: 2 ** 53 - 1 }, V), 50, V)).not.toEqual(draws(new Sampler({ ...o, seed: 2 ** 53 - 1 - 2 ** 32 }, V), 50, V));
    expect(draws(new Sampler({ ...o, seed: 4294967303 }, V), 50, V)).toEqual(draws(new Sampler({ ...o, seed: 4294967303 }, V), 50, V));
    expect(a).toEqual(draws(new SortingSampler({ ...o, seed: 7 }, V), 50, V));
    expect(() => new Sampler({ ...o, seed: -1 }, V)).toThrow(/seed/);
    expect(() => new Sampler({ ...o, seed: 2 ** 53 }, V)).toThrow(/seed/);
  });

  it("is greedy at temperature 0 and survives all -inf logits", () => {
    const l = new Float32Array([1, 5, 5, 2]);
    expect(new Sampler({ temperature: 0, topP: 1, topK: 0, seed: 1 }, 4).sample(l)).toBe(1);
    expect(new Sampler({ temperature: 1, topP: 1, topK: 0, seed: 1 }, 4).sample(new Float32Array(4).fill(-Infinity))).toBe(0);
  });
});
