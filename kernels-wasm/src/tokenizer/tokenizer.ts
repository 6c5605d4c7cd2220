/**
 * The tokenizer of a GGUF model: text ↔ token ids, chat template, streaming detokenizer.
 * Byte-level BPE (model "gpt2", with the model's pre-tokenizer) or SentencePiece ("llama").
 * Control and user-defined tokens written as text (e.g. `<|im_start|>` from the chat template)
 * become their single token unless `parseSpecial: false`.
 */
import { Template } from "@huggingface/jinja";
import type { GGUFValue } from "../gguf/reader";
import { BPEModel } from "./bpe";
import { byteLevelToBytes } from "./byte-level";
import { tokenizerDataFromGGUF, validateTokenizerData, type TokenizerData } from "./data";
import { preTokenizerFor } from "./pre-tokenizer";
import { SPMModel } from "./spm";
import { createStreamDecoder, type StreamDecoder } from "./stream-decoder";

export interface ChatMessage {
  role: string;
  content: string;
  [extra: string]: unknown;
}

export interface EncodeOptions {
  /** Add BOS/EOS as the model's metadata asks (`add_bos_token`, `add_eos_token`). Default false. */
  addSpecial?: boolean;
  /** Turn special-token texts into their tokens. Default true. */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /**
   * Leave out control tokens (`<|im_start|>`, `<|endoftext|>`, …): the text a client sees, as
   * vLLM's `skip_special_tokens` default and llama.cpp's detokenizer. Default true. User-defined
   * tokens are text and are always kept.
   */
  skipSpecial?: boolean;
}

const TYPE_CONTROL = 3, TYPE_USER_DEFINED = 4, TYPE_BYTE = 6;
const utf8 = new TextEncoder();

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: number[];
  readonly chatTemplate: string | null;
  /**
   * The most UTF-8 bytes one token stands for (special tokens included). Encoding splits the
   * text's bytes among its tokens, and a string's UTF-16 length never exceeds its UTF-8 length,
   * so `encode(text)` has at least `text.length / maxTokenBytes` tokens: a cheap lower bound to
   * refuse text far beyond a context before paying for tokenization.
   */
  readonly maxTokenBytes: number;
  /**
   * Every token's bytes, packed: token i is tokenBytes[tokenStart[i] .. tokenStart[i + 1]).
   * One array and one offset table (~0.6 MB for 49k tokens) instead of 49k Uint8Arrays, which
   * cost ~10 MB of object headers and backing stores.
   */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenStart: Uint32Array; // (vocab + 1)
  private readonly tokenTypes: Uint8Array; // (vocab) GGUF token types
  private readonly special: RegExp | null;
  private readonly specialIds = new Map<string, number>();
  private readonly bosText: string;
  private readonly eosText: string;
  private readonly addBos: boolean;
  private readonly addEos: boolean;
  private readonly spacePrefix: boolean;
  private readonly bpe?: BPEModel;
  private readonly spm?: SPMModel;
  private template?: Template;

  static fromGGUF(metadata: Record<string, GGUFValue>): Tokenizer {
    return new Tokenizer(tokenizerDataFromGGUF(metadata));
  }

  static fromJSON(data: unknown): Tokenizer {
    return new Tokenizer(validateTokenizerData(typeof data === "string" ? JSON.parse(data) : data));
  }

  /** Keeps nothing of `data` but what encoding and decoding need (its strings can be collected). */
  private constructor(data: TokenizerData) {
    const V = data.tokens.length;
    this.vocabSize = V;
    this.bosTokenId = data.bosTokenId;
    this.eosTokenIds = [...data.eosTokenIds];
    this.chatTemplate = data.chatTemplate;
    this.addBos = data.addBos;
    this.addEos = data.addEos;
    const tokenText = (id: number | null) => (id === null ? "" : data.tokens[id] ?? "");
    this.bosText = tokenText(this.bosTokenId);
    this.eosText = tokenText(this.eosTokenIds[0] ?? null);
    this.tokenTypes = Uint8Array.from(data.tokenTypes);
    const specials: string[] = [];
    data.tokens.forEach((t, i) => {
      const ty = data.tokenTypes[i];
      if ((ty === TYPE_CONTROL || ty === TYPE_USER_DEFINED) && t.length > 0) {
        specials.push(t);
        if (!this.specialIds.has(t)) this.specialIds.set(t, i);
      }
    });
    // Longest first, so a special token that is a prefix of another does not win.
    specials.sort((a, b) => b.length - a.length);
    this.special = specials.length
      ? new RegExp("(" + specials.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")")
      : null;
    const bytes = data.tokens.map((t, i) => bytesOf(data.model, t, data.tokenTypes[i]));
    this.tokenStart = new Uint32Array(V + 1);
    for (let i = 0; i < V; i++) this.tokenStart[i + 1] = this.tokenStart[i] + bytes[i].length;
    this.tokenBytes = new Uint8Array(this.tokenStart[V]);
    bytes.forEach((b, i) => this.tokenBytes.set(b, this.tokenStart[i]));
    this.maxTokenBytes = bytes.reduce((m, b) => Math.max(m, b.length), 1);
    this.spacePrefix = data.model === "llama" && data.addSpacePrefix;
    if (data.model === "gpt2") {
      this.bpe = new BPEModel(data.tokens, data.merges, preTokenizerFor(data.pre), data.unkTokenId);
    } else {
      const vocab = new Map<string, number>();
      data.tokens.forEach((t, i) => { if (!vocab.has(t)) vocab.set(t, i); });
      this.spm = new SPMModel(vocab, Float32Array.from(data.scores), data.addSpacePrefix, data.unkTokenId);
    }
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== "string") throw new TypeError(`encode: expected a string, got ${typeof text}`);
    const ids: number[] = [];
    if (opts.addSpecial && this.addBos && this.bosTokenId !== null) ids.push(this.bosTokenId);
    const parts = opts.parseSpecial !== false && this.special ? text.split(this.special) : [text];
    // split() with one capture group alternates text, special, text, ...
    parts.forEach((part, i) => {
      if (i % 2 === 1) { ids.push(this.specialIds.get(part)!); return; }
      if (this.bpe) this.bpe.encode(part, ids);
      else this.spm!.encode(part, ids, i === 0);
    });
    if (opts.addSpecial && this.addEos && this.eosTokenIds.length) ids.push(this.eosTokenIds[0]);
    return ids;
  }

  decode(ids: number[], opts: DecodeOptions = {}): string {
    return new TextDecoder("utf-8").decode(this.idsToBytes(ids, true, opts.skipSpecial ?? true));
  }

  /** Detokenizes a generation as it streams; control tokens are left out unless `skipSpecial: false`. */
  newStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skip = opts.skipSpecial ?? true;
    return createStreamDecoder((ids, atStart) => this.idsToBytes(ids, atStart, skip));
  }

  /** True for control tokens (the ones decode leaves out by default). */
  isControl(id: number): boolean {
    return this.tokenTypes[id] === TYPE_CONTROL;
  }

  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.chatTemplate) throw new Error("this model has no chat template (GGUF tokenizer.chat_template)");
    this.template ??= new Template(this.chatTemplate);
    return this.template.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.bosText,
      eos_token: this.eosText,
    });
  }

  private idsToBytes(ids: number[], atStart: boolean, skipSpecial: boolean): Uint8Array {
    const start = this.tokenStart;
    let n = 0;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
      if (!(skipSpecial && this.tokenTypes[id] === TYPE_CONTROL)) n += start[id + 1] - start[id];
    }
    let out = new Uint8Array(n);
    let o = 0;
    for (const id of ids) {
      if (skipSpecial && this.tokenTypes[id] === TYPE_CONTROL) continue;
      out.set(this.tokenBytes.subarray(start[id], start[id + 1]), o);
      o += start[id + 1] - start[id];
    }
    // SentencePiece: the space the encoder prefixed is not part of the text.
    if (this.spacePrefix && atStart && out[0] === 0x20) out = out.subarray(1);
    return out;
  }
}

function bytesOf(model: TokenizerData["model"], token: string, type: number): Uint8Array {
  if (type === TYPE_CONTROL || type === TYPE_USER_DEFINED) return utf8.encode(token);
  if (model === "gpt2") return byteLevelToBytes(token) ?? utf8.encode(token);
  if (type === TYPE_BYTE) {
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    if (m) return Uint8Array.of(parseInt(m[1], 16));
  }
  return utf8.encode(token.replace(/▁/g, " "));
}
