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
  private readonly tokenBytes: Uint8Array[];
  private readonly special: RegExp | null;
  private readonly specialIds = new Map<string, number>();
  private readonly bpe?: BPEModel;
  private readonly spm?: SPMModel;
  private template?: Template;

  static fromGGUF(metadata: Record<string, GGUFValue>): Tokenizer {
    return new Tokenizer(tokenizerDataFromGGUF(metadata));
  }

  static fromJSON(data: unknown): Tokenizer {
    return new Tokenizer(validateTokenizerData(typeof data === "string" ? JSON.parse(data) : data));
  }

  private constructor(private readonly data: TokenizerData) {
    this.vocabSize = data.tokens.length;
    this.bosTokenId = data.bosTokenId;
    this.eosTokenIds = [...data.eosTokenIds];
    this.chatTemplate = data.chatTemplate;
    const vocab = new Map<string, number>();
    data.tokens.forEach((t, i) => { if (!vocab.has(t)) vocab.set(t, i); });
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
    this.tokenBytes = data.tokens.map((t, i) => this.bytesOf(t, data.tokenTypes[i]));
    this.maxTokenBytes = this.tokenBytes.reduce((m, b) => Math.max(m, b.length), 1);
    if (data.model === "gpt2") {
      this.bpe = new BPEModel(vocab, data.merges, preTokenizerFor(data.pre), data.unkTokenId);
    } else {
      this.spm = new SPMModel(vocab, data.scores, data.addSpacePrefix, data.unkTokenId);
    }
  }

  toJSON(): TokenizerData {
    return this.data;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== "string") throw new TypeError(`encode: expected a string, got ${typeof text}`);
    const ids: number[] = [];
    if (opts.addSpecial && this.data.addBos && this.bosTokenId !== null) ids.push(this.bosTokenId);
    const parts = opts.parseSpecial !== false && this.special ? text.split(this.special) : [text];
    // split() with one capture group alternates text, special, text, ...
    parts.forEach((part, i) => {
      if (i % 2 === 1) { ids.push(this.specialIds.get(part)!); return; }
      if (this.bpe) this.bpe.encode(part, ids);
      else this.spm!.encode(part, ids, i === 0);
    });
    if (opts.addSpecial && this.data.addEos && this.eosTokenIds.length) ids.push(this.eosTokenIds[0]);
    return ids;
  }

  decode(ids: number[]): string {
    return new TextDecoder("utf-8").decode(this.idsToBytes(ids, true));
  }

  newStreamDecoder(): StreamDecoder {
    return createStreamDecoder((ids, atStart) => this.idsToBytes(ids, atStart));
  }

  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.chatTemplate) throw new Error("this model has no chat template (GGUF tokenizer.chat_template)");
    this.template ??= new Template(this.chatTemplate);
    const tok = (id: number | null) => (id === null ? "" : this.data.tokens[id] ?? "");
    return this.template.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: tok(this.bosTokenId),
      eos_token: tok(this.eosTokenIds[0] ?? null),
    });
  }

  private idsToBytes(ids: number[], atStart: boolean): Uint8Array {
    let n = 0;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
      n += this.tokenBytes[id].length;
    }
    let out = new Uint8Array(n);
    let o = 0;
    for (const id of ids) { out.set(this.tokenBytes[id], o); o += this.tokenBytes[id].length; }
    // SentencePiece: the space the encoder prefixed is not part of the text.
    if (this.spm && this.data.addSpacePrefix && atStart && out[0] === 0x20) out = out.subarray(1);
    return out;
  }

  private bytesOf(token: string, type: number): Uint8Array {
    if (type === TYPE_CONTROL || type === TYPE_USER_DEFINED) return utf8.encode(token);
    if (this.data.model === "gpt2") return byteLevelToBytes(token) ?? utf8.encode(token);
    if (type === TYPE_BYTE) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
      if (m) return Uint8Array.of(parseInt(m[1], 16));
    }
    return utf8.encode(token.replace(/▁/g, " "));
  }
}
