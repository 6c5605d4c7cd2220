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

  private encodeWord(word: string): number[] {
    const whole = this.vocab.get(word);
    if (whole !== undefined && word.length === 1) return [whole];
    let syms = Array.from(word);
    while (syms.length > 1) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < syms.length - 1; i++) {
        const r = this.ranks.get(syms[i] + " " + syms[i + 1]);
        if (r !== undefined && r < best) { best = r; at = i; }
      }
      if (at < 0) break;
      const a = syms[at], b = syms[at + 1];
      // Merge every occurrence of this pair, left to right, as HF and llama.cpp do.
      const next: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i < syms.length - 1 && syms[i] === a && syms[i + 1] === b) { next.push(a + b); i++; }
        else next.push(syms[i]);
      }
      syms = next;
    }
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
