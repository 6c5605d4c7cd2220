/**
 * SentencePiece (llama-style vocabularies, GGUF `tokenizer.ggml.model = "llama"`): spaces become
 * "▁", then the adjacent pair whose concatenation is in the vocabulary with the highest score is
 * merged (leftmost on ties) until none is; symbols left outside the vocabulary fall back to
 * `<0xXX>` byte tokens. Cost is O(n²) in the characters of the text.
 */
const utf8 = new TextEncoder();

export class SPMModel {
  private byteIds: (number | undefined)[] = [];

  constructor(
    private vocab: Map<string, number>,
    private scores: ArrayLike<number>,
    private addSpacePrefix: boolean,
    private unkId: number | null,
  ) {
    for (let b = 0; b < 256; b++) {
      this.byteIds[b] = vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    }
  }

  encode(text: string, out: number[], atStart: boolean): void {
    if (text.length === 0) return;
    let s = text.replace(/ /g, "▁");
    if (this.addSpacePrefix && atStart) s = "▁" + s;
    const syms = Array.from(s);
    while (syms.length > 1) {
      let best = -Infinity;
      let at = -1;
      for (let i = 0; i < syms.length - 1; i++) {
        const id = this.vocab.get(syms[i] + syms[i + 1]);
        if (id !== undefined && this.scores[id] > best) { best = this.scores[id]; at = i; }
      }
      if (at < 0) break;
      syms.splice(at, 2, syms[at] + syms[at + 1]);
    }
    for (const sym of syms) {
      const id = this.vocab.get(sym);
      if (id !== undefined) { out.push(id); continue; }
      for (const b of utf8.encode(sym)) {
        const bid = this.byteIds[b];
        if (bid !== undefined) out.push(bid);
        else if (this.unkId !== null) out.push(this.unkId);
        else throw new Error(`SentencePiece: byte 0x${b.toString(16)} has no token and there is no unknown token`);
      }
    }
  }
}
