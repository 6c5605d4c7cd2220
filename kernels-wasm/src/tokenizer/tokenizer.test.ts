import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { Tokenizer, tokenizerDataFromGGUF } from "./index";
import { bytesToByteLevel } from "./byte-level";
import { readHeader } from "../../test/model-file";

const golden = JSON.parse(readFileSync(new URL("../../golden/tokenizer-smollm2.json", import.meta.url), "utf8")) as {
  cases: { text: string; ids: number[] }[];
};
const greedy = JSON.parse(readFileSync(new URL("../../golden/greedy-smollm2.json", import.meta.url), "utf8")) as {
  system: string;
  runs: { user: string; promptIds: number[] }[];
};

const data = tokenizerDataFromGGUF(readHeader().metadata);
const tok = Tokenizer.fromJSON(data);

describe("Tokenizer (SmolLM2 byte-level BPE) against llama.cpp's ids", () => {
  it.each(golden.cases.map((c) => [JSON.stringify(c.text).slice(0, 50), c] as const))("encode %s", (_, c) => {
    expect(tok.encode(c.text)).toEqual(c.ids);
  });

  it("decodes every golden case back to its text", () => {
    for (const c of golden.cases) expect(tok.decode(c.ids, { skipSpecial: false })).toBe(c.text);
  });

  it("renders the GGUF chat template to the prompt ids llama.cpp saw", () => {
    for (const r of greedy.runs) {
      const text = tok.applyChatTemplate([{ role: "user", content: r.user }], { addGenerationPrompt: true });
      expect(tok.encode(text)).toEqual(r.promptIds);
    }
  });

  it("keeps metadata: vocab size, BOS, end-of-generation ids", () => {
    expect(tok.vocabSize).toBe(49152);
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenIds).toEqual([0, 2]); // <|endoftext|>, <|im_end|>
    expect(tok.encode("hi", { addSpecial: true })).toEqual(tok.encode("hi")); // add_bos_token = false
  });

  it("leaves special-token text alone when parseSpecial is false", () => {
    const ids = tok.encode("<|im_end|>", { parseSpecial: false });
    expect(ids.length).toBeGreaterThan(1);
    expect(ids).not.toContain(2);
    expect(tok.decode(ids)).toBe("<|im_end|>");
  });

  it("builds the same tokenizer from JSON text as from GGUF metadata", () => {
    const copy = Tokenizer.fromJSON(JSON.parse(JSON.stringify(data)));
    for (const c of golden.cases) expect(copy.encode(c.text)).toEqual(c.ids);
    expect(copy.eosTokenIds).toEqual(tok.eosTokenIds);
  });

  it("leaves control tokens out of decoded text unless skipSpecial is false (A4 item 7)", () => {
    // A4's case: the model generated <|im_start|> (id 1), a control token, mid-answer.
    const ids = tok.encode("Sure.\n<|im_start|>assistant\nHi<|endoftext|>");
    expect(ids).toContain(1);
    expect(ids).toContain(0);
    expect(tok.isControl(1) && tok.isControl(0) && !tok.isControl(ids[0])).toBe(true);
    expect(tok.decode(ids)).toBe("Sure.\nassistant\nHi");
    expect(tok.decode(ids, { skipSpecial: false })).toBe("Sure.\n<|im_start|>assistant\nHi<|endoftext|>");
    const d = tok.newStreamDecoder();
    expect(ids.map((id) => d.push([id])).join("") + d.flush()).toBe("Sure.\nassistant\nHi");
    const raw = tok.newStreamDecoder({ skipSpecial: false });
    expect(raw.push(ids) + raw.flush()).toBe("Sure.\n<|im_start|>assistant\nHi<|endoftext|>");
    // every control token of the vocabulary decodes to nothing
    const controls = data.tokenTypes.flatMap((t, i) => (t === 3 ? [i] : []));
    expect(controls.length).toBe(17);
    expect(tok.decode(controls)).toBe("");
  });

  it("rejects bad input with clear errors", () => {
    expect(() => tok.decode([49152])).toThrow(/outside the vocabulary/);
    expect(() => tok.decode([-1])).toThrow(/outside the vocabulary/);
    expect(() => Tokenizer.fromJSON({ format: "nope" })).toThrow(/format/);
    expect(() => tok.encode(42 as unknown as string)).toThrow(/expected a string/);
  });
});

describe("long text", () => {
  it("encodes 160 000 pre-tokens without overflowing the stack (pieces are appended one by one)", () => {
    // "hello world " x 80000: 160 001 GPT-2 pieces in one run without digits (A3 item 4: a 500).
    const ids = tok.encode("hello world ".repeat(80_000));
    const one = tok.encode("hello world hello");
    expect(ids.length).toBe(160_001);
    expect(ids.slice(0, 3)).toEqual(one);
    // Digits split the text into runs; the runs between them are just as long.
    expect(tok.encode("hello world ".repeat(80_000) + "1").length).toBe(160_002);
  });

  it("maxTokenBytes bounds the characters per token: tokens >= text.length / maxTokenBytes", () => {
    // SmolLM2's longest token is a newline and 80 spaces (81 bytes).
    expect(tok.maxTokenBytes).toBe(81);
    const worst = "\n" + " ".repeat(80);
    expect(tok.encode(worst)).toHaveLength(1);
    const texts = [...golden.cases.map((c) => c.text), worst.repeat(3) + "x", "#".repeat(80 * 7), "<|im_end|>".repeat(5)];
    for (const t of texts) expect(tok.encode(t).length).toBeGreaterThanOrEqual(Math.ceil(t.length / tok.maxTokenBytes));
  });
});

describe("BPE merges (heap) against the plain rescanning algorithm", () => {
  // The textbook loop: find the lowest-ranked adjacent pair, merge all its occurrences left to
  // right, repeat. O(n^2) per word; the tokenizer's heap must give the same symbols.
  const ranks = new Map(data.merges.map((m, i) => [m, i] as const));
  const vocab = new Map<string, number>();
  data.tokens.forEach((t, i) => { if (!vocab.has(t)) vocab.set(t, i); });
  const reference = (piece: string): number[] => {
    let syms = Array.from(bytesToByteLevel(new TextEncoder().encode(piece)));
    for (;;) {
      let best = Infinity;
      for (let i = 0; i + 1 < syms.length; i++) best = Math.min(best, ranks.get(syms[i] + " " + syms[i + 1]) ?? Infinity);
      if (best === Infinity) break;
      const next: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && ranks.get(syms[i] + " " + syms[i + 1]) === best) { next.push(syms[i] + syms[i + 1]); i++; }
        else next.push(syms[i]);
      }
      syms = next;
    }
    return syms.map((s) => vocab.get(s)!);
  };

  it("gives the same ids on random words, repeats and mixed scripts", () => {
    let x = 42;
    const rnd = (n: number) => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x % n; };
    const alphabets = ["abcdefghijklmnopqrstuvwxyz", "aab", "ABCdefGHI", "éàüß", "漢字仮名", "xyzzy"];
    for (let t = 0; t < 300; t++) {
      const al = Array.from(alphabets[t % alphabets.length]);
      let w = "";
      for (let i = 1 + rnd(t % 20 === 0 ? 400 : 30); i > 0; i--) w += al[rnd(al.length)];
      // one letters-only piece: the pre-tokenizer leaves it whole
      expect(tok.encode(w), w).toEqual(reference(w));
    }
  });

  it("encodes a 50 000-letter word (seconds of rescanning before) and decodes it back", () => {
    const w = Array.from({ length: 50_000 }, (_, i) => "etaoinshrdlucmfw"[(i * 7919) % 16]).join("");
    const ids = tok.encode(w);
    expect(tok.decode(ids)).toBe(w);
    expect(ids.length).toBeGreaterThanOrEqual(Math.ceil(w.length / tok.maxTokenBytes));
  });
});

describe("stream decoder", () => {
  it("never splits a multi-byte character across pushes, one token at a time", () => {
    for (const c of golden.cases) {
      const d = tok.newStreamDecoder({ skipSpecial: false });
      let out = "";
      for (const id of c.ids) {
        const piece = d.push([id]);
        expect(piece).not.toContain("\uFFFD");
        out += piece;
      }
      out += d.flush();
      expect(out).toBe(c.text);
    }
  });

  it("holds back an incomplete character and flushes it as U+FFFD if it never completes", () => {
    // One byte-level token per byte of "😀" (4 bytes), pushed one at a time.
    const tokens = data.tokens;
    const ids = [...new TextEncoder().encode("😀")].map((b) => tokens.indexOf(bytesToByteLevel(Uint8Array.of(b))));
    expect(ids.every((i) => i >= 0)).toBe(true);
    const d = tok.newStreamDecoder();
    expect(ids.slice(0, 3).map((i) => d.push([i])).join("")).toBe("");
    expect(d.push([ids[3]])).toBe("😀");
    const e = tok.newStreamDecoder();
    e.push(ids.slice(0, 2));
    expect(e.flush()).toBe("\uFFFD");
  });
});
