import { describe, expect, it } from "vitest";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { BPEModel } from "./bpe";
import { tokenizerDataFromGGUF } from "./data";
import { preTokenizerFor } from "./pre-tokenizer";
import { readHeader } from "../../test/model-file";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const heapMiB = () => { gc(); gc(); return process.memoryUsage().heapUsed / 1048576; };

describe("BPE piece cache (A4 item 4)", () => {
  const data = tokenizerDataFromGGUF(readHeader().metadata);

  it("does not keep request texts alive through cached pieces, and stays bounded", () => {
    const bpe = new BPEModel(data.tokens, data.merges, preTokenizerFor(data.pre), data.unkTokenId);
    const filler = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(5000); // 275k chars
    let before = 0;
    for (let r = 0; r <= 20; r++) {
      // unique words of 13..32 characters (V8 slices of the text: cached as copies) and of
      // 40+ (never cached); the text is built fresh per request and dropped after it
      const text = `q${r}unique${"y".repeat(r % 20)} ` + filler + ` ${"z".repeat(40 + r)} tail${r}zz`;
      const out: number[] = [];
      bpe.encode(text, out);
      expect(out.length).toBeGreaterThan(90_000);
      if (r === 0) before = heapMiB(); // after one request: compiled code and the cache's common words
    }
    const grown = heapMiB() - before;
    // Before: each request's 275 KB text stayed alive (+5.5 MB over 20 requests; A4 measured
    // +19.9 MiB over 40 of 550k chars). Now only the new pieces' short keys and ids (~7 KB a request).
    expect(grown).toBeLessThan(0.75);
    expect(bpe.cachedChars).toBeLessThanOrEqual(256 * 1024);
  });

  it("clears itself at its character bound and still encodes the same ids", () => {
    const bpe = new BPEModel(data.tokens, data.merges, preTokenizerFor(data.pre), data.unkTokenId);
    const fresh = () => new BPEModel(data.tokens, data.merges, preTokenizerFor(data.pre), data.unkTokenId);
    let x = 7;
    const rnd = (n: number) => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x % n; };
    const words = Array.from({ length: 30_000 }, () => Array.from({ length: 5 + rnd(25) }, () => "abcdefghij"[rnd(10)]).join(""));
    const text = words.join(" ");
    const a: number[] = [];
    bpe.encode(text, a);
    expect(bpe.cachedChars).toBeLessThanOrEqual(256 * 1024);
    const b: number[] = [];
    bpe.encode(text, b); // partly from the cache
    const c: number[] = [];
    fresh().encode(text, c);
    expect(b).toEqual(c);
    expect(a).toEqual(c);
  });
});
