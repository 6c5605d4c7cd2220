/**
 * GPT-2-style byte-level BPE: each pre-token's UTF-8 bytes become byte-level characters, then
 * the adjacent pair with the lowest merge rank is merged until no ranked pair is left.
 */
import { bytesToByteLevel } from "./byte-level";
import type { PreTokenizer } from "./pre-tokenizer";

const utf8 = new TextEncoder();
const CACHE_LIMIT = 20_000;

export class BPEModel {
  private ranks = new Map<string, number>();
  private cache = new Map<string, number[]>();

  constructor(
    private vocab: Map<string, number>,
    merges: string[],
    private pre: PreTokenizer,
    private unkId: number | null,
  ) {
    merges.forEach((m, i) => this.ranks.set(m, i));
  }

  encode(text: string, out: number[]): void {
    for (const piece of this.pre(text)) {
      let ids = this.cache.get(piece);
      if (!ids) {
        ids = this.encodeWord(bytesToByteLevel(utf8.encode(piece)));
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /**
   * Merges the word's symbols, lowest-ranked adjacent pair first (leftmost among equals), as HF's
   * BPE does: a heap of candidate pairs over a linked list of symbols, O(n log n) in the word's
   * bytes. (Rescanning every pair per merge was O(n^2): a 100 000-letter word took 13 s.)
   */
  private mergeSymbols(word: string): string[] {
    const sym = Array.from(word);
    const n = sym.length;
    if (n < 2) return sym;
    const next = new Int32Array(n), prev = new Int32Array(n), ver = new Uint32Array(n);
    for (let i = 0; i < n; i++) { next[i] = i + 1; prev[i] = i - 1; }
    next[n - 1] = -1;
    const heap = new PairHeap();
    const offer = (l: number, r: number) => {
      const rank = this.ranks.get(sym[l] + " " + sym[r]);
      if (rank !== undefined) heap.push({ rank, l, r, vl: ver[l], vr: ver[r] });
    };
    for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
    for (let c = heap.pop(); c; c = heap.pop()) {
      // Stale when either side was merged since (versions moved) or the right side is gone.
      if (next[c.l] !== c.r || ver[c.l] !== c.vl || ver[c.r] !== c.vr) continue;
      sym[c.l] += sym[c.r];
      ver[c.l]++;
      ver[c.r]++;
      const after = next[c.r];
      next[c.l] = after;
      if (after >= 0) prev[after] = c.l;
      next[c.r] = -1;
      if (prev[c.l] >= 0) offer(prev[c.l], c.l);
      if (after >= 0) offer(c.l, after);
    }
    const out: string[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }

  private encodeWord(word: string): number[] {
    const whole = this.vocab.get(word);
    if (whole !== undefined && word.length === 1) return [whole];
    const syms = this.mergeSymbols(word);
    const ids: number[] = [];
    for (const s of syms) {
      const id = this.vocab.get(s);
      if (id !== undefined) ids.push(id);
      else if (this.unkId !== null) ids.push(this.unkId);
      else throw new Error(`BPE: symbol ${JSON.stringify(s)} is not in the vocabulary and there is no unknown token`);
    }
    return ids;
  }
}

interface Pair {
  rank: number;
  /** Left and right symbol positions, and their versions when the pair was offered. */
  l: number;
  r: number;
  vl: number;
  vr: number;
}

/** Binary min-heap of pairs by (rank, left position). */
class PairHeap {
  private a: Pair[] = [];

  private less(x: Pair, y: Pair): boolean {
    return x.rank < y.rank || (x.rank === y.rank && x.l < y.l);
  }

  push(p: Pair): void {
    const a = this.a;
    let i = a.length;
    a.push(p);
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.less(a[i], a[up])) break;
      [a[i], a[up]] = [a[up], a[i]];
      i = up;
    }
  }

  pop(): Pair | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l], a[m])) m = l;
        if (r < a.length && this.less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
