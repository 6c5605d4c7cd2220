/**
 * GPT-2-style byte-level BPE: each pre-token's UTF-8 bytes become byte tokens, then the adjacent
 * pair with the lowest merge rank is merged until no ranked pair is left.
 *
 * Works on token ids, not strings: the merges are an open-addressing table keyed by the pair of
 * ids (int32 arrays, ~1.1 MB for 49k merges, instead of a Map of 49k "a b" strings), and each
 * merge knows the id it makes, so the step concatenates no strings and looks up no vocabulary.
 */
import { bytesToByteLevel } from "./byte-level";
import type { PreTokenizer } from "./pre-tokenizer";

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * Piece → ids cache. V8 makes a substring of 13+ characters a slice of its parent, so a cached
 * slice would keep the whole request text alive: pieces longer than CACHE_MAX_PIECE are never
 * cached, cached keys are fresh copies, and the cache is cleared once it holds CACHE_MAX_CHARS
 * characters or CACHE_MAX_ENTRIES pieces (≤ ~2.5 MB of heap).
 */
const CACHE_MAX_PIECE = 32;
const CACHE_MAX_CHARS = 256 * 1024;
const CACHE_MAX_ENTRIES = 20_000;
const V8_SLICE_MIN = 13;

export class BPEModel {
  /** The id of each byte's byte-level character (-1: not in the vocabulary). (256) */
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly merged: Int32Array;
  /** Open addressing, linear probing: rank + 1 of the pair hashed there, 0 = empty. (2^bits) */
  private readonly slots: Int32Array;
  private readonly shift: number;
  private readonly mask: number;
  /** Scratch of mergeSymbols: the next symbol of each position (-1 ends). Grown, never shrunk. */
  private next = new Int32Array(64);
  private cache = new Map<string, number | number[]>();
  private cacheChars = 0;

  /**
   * `tokens` are the vocabulary's byte-level strings (the first id of a duplicated string wins);
   * `merges` "a b", rank = index (a pair listed twice keeps its last rank). A merge whose sides
   * or result are not in the vocabulary can never produce a token, and is dropped.
   */
  constructor(tokens: readonly string[], merges: readonly string[], private pre: PreTokenizer, private unkId: number | null) {
    const vocab = new Map<string, number>();
    tokens.forEach((t, i) => { if (!vocab.has(t)) vocab.set(t, i); });
    for (let b = 0; b < 256; b++) this.byteIds[b] = vocab.get(bytesToByteLevel(Uint8Array.of(b))) ?? -1;
    const n = merges.length;
    this.left = new Int32Array(n).fill(-1);
    this.right = new Int32Array(n).fill(-1);
    this.merged = new Int32Array(n).fill(-1);
    let bits = 4;
    while (1 << bits < 2 * n) bits++;
    this.slots = new Int32Array(1 << bits);
    this.shift = 32 - bits;
    this.mask = (1 << bits) - 1;
    for (let r = 0; r < n; r++) {
      const m = merges[r];
      const sp = m.indexOf(" ", 1);
      if (sp < 0) continue;
      const a = vocab.get(m.slice(0, sp)), b = vocab.get(m.slice(sp + 1)), c = vocab.get(m.slice(0, sp) + m.slice(sp + 1));
      if (a === undefined || b === undefined || c === undefined) continue;
      this.left[r] = a;
      this.right[r] = b;
      this.merged[r] = c;
      this.slots[this.find(a, b)] = r + 1;
    }
  }

  encode(text: string, out: number[]): void {
    for (const piece of this.pre(text)) {
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        const bytes = utf8.encode(piece);
        ids = this.encodeBytes(bytes);
        if (piece.length <= CACHE_MAX_PIECE) {
          if (this.cache.size >= CACHE_MAX_ENTRIES || this.cacheChars + piece.length > CACHE_MAX_CHARS) {
            this.cache.clear();
            this.cacheChars = 0;
          }
          this.cache.set(piece.length >= V8_SLICE_MIN ? utf8Decoder.decode(bytes) : piece, ids);
          this.cacheChars += piece.length;
        }
      }
      if (typeof ids === "number") out.push(ids);
      else for (const id of ids) out.push(id);
    }
  }

  /** Characters held as cache keys now (tests: the cache is bounded). */
  get cachedChars(): number {
    return this.cacheChars;
  }

  /** Slot of pair (a, b): where it is, or the empty slot where it would go. */
  private find(a: number, b: number): number {
    let h = Math.imul(a ^ Math.imul(b, 0x85ebca6b), 0x9e3779b1) >>> this.shift;
    for (;;) {
      const s = this.slots[h];
      if (s === 0 || (this.left[s - 1] === a && this.right[s - 1] === b)) return h;
      h = (h + 1) & this.mask;
    }
  }

  /** Rank of merging (a, b), -1 if they do not merge. */
  private rank(a: number, b: number): number {
    return this.slots[this.find(a, b)] - 1;
  }

  /** One pre-token's bytes → ids: a single id as a number, else an array. */
  private encodeBytes(bytes: Uint8Array): number | number[] {
    const n = bytes.length;
    const sym = new Int32Array(n);
    for (let i = 0; i < n; i++) sym[i] = this.byteIds[bytes[i]];
    if (n === 1 && sym[0] >= 0) return sym[0];
    if (n === 0) return [];
    const ids: number[] = [];
    const first = this.mergeSymbols(sym);
    const next = this.next; // after mergeSymbols: it may have grown the scratch
    for (let j = first; j >= 0; j = next[j]) {
      const id = sym[j];
      if (id >= 0) ids.push(id);
      else if (this.unkId !== null) ids.push(this.unkId);
      else throw new Error(`BPE: byte 0x${bytes[j].toString(16)} is not in the vocabulary and there is no unknown token`);
    }
    return ids.length === 1 ? ids[0] : ids;
  }

  /**
   * Merges sym in place, lowest-ranked adjacent pair first (leftmost among equals), as HF's BPE
   * does: a heap of candidate pairs over a linked list of symbols, O(n log n) in the word's
   * bytes. Returns the first symbol; this.next links the rest (-1 ends).
   */
  private mergeSymbols(sym: Int32Array): number {
    const n = sym.length;
    if (this.next.length < n) this.next = new Int32Array(Math.max(n, 2 * this.next.length));
    const next = this.next;
    for (let i = 0; i < n; i++) next[i] = i + 1;
    next[n - 1] = -1;
    if (n < 2) return 0;
    const prev = new Int32Array(n), ver = new Uint32Array(n);
    for (let i = 0; i < n; i++) prev[i] = i - 1;
    const heap = new PairHeap();
    const offer = (l: number, r: number) => {
      if (sym[l] < 0 || sym[r] < 0) return;
      const rank = this.rank(sym[l], sym[r]);
      if (rank >= 0) heap.push({ rank, l, r, vl: ver[l], vr: ver[r] });
    };
    for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
    for (let c = heap.pop(); c; c = heap.pop()) {
      // Stale when either side was merged since (versions moved) or the right side is gone.
      if (next[c.l] !== c.r || ver[c.l] !== c.vl || ver[c.r] !== c.vr) continue;
      sym[c.l] = this.merged[c.rank];
      ver[c.l]++;
      ver[c.r]++;
      const after = next[c.r];
      next[c.l] = after;
      if (after >= 0) prev[after] = c.l;
      next[c.r] = -1;
      if (prev[c.l] >= 0) offer(prev[c.l], c.l);
      if (after >= 0) offer(c.l, after);
    }
    return 0;
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
