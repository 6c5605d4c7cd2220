/**
 * Pre-tokenizers: split text into the pieces BPE merges within, as the model's tokenizer does.
 * Keyed by GGUF `tokenizer.ggml.pre`.
 */

// GPT-2's split (HF ByteLevel with use_regex): contractions, letters, numbers, other symbols,
// whitespace runs that leave the last space to the next word.
const GPT2 = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const DIGIT = /\p{N}/u;

export type PreTokenizer = (text: string) => string[];

/** Appends `items` to `out` one by one: spreading a large array into push() overflows the stack. */
function append(out: string[], items: string[]): void {
  for (const it of items) out.push(it);
}

function gpt2(text: string): string[] {
  return text.match(GPT2) ?? [];
}

/** SmolLM / StarCoder: every digit on its own (HF `Digits(individual_digits)`), then GPT-2. */
function digitsThenGpt2(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  // Iterate by code point: \p{N} includes astral digits.
  let i = 0;
  for (const ch of text) {
    if (DIGIT.test(ch)) {
      if (i > start) append(out, gpt2(text.slice(start, i)));
      out.push(ch);
      start = i + ch.length;
    }
    i += ch.length;
  }
  if (text.length > start) append(out, gpt2(text.slice(start)));
  return out;
}

const PRE_TOKENIZERS: Record<string, PreTokenizer> = {
  gpt2,
  default: gpt2,
  smollm: digitsThenGpt2,
  starcoder: digitsThenGpt2,
  refact: digitsThenGpt2,
};

export function preTokenizerFor(name: string): PreTokenizer {
  const p = PRE_TOKENIZERS[name];
  if (!p) throw new Error(`pre-tokenizer "${name}" is not supported (supported: ${Object.keys(PRE_TOKENIZERS).join(", ")})`);
  return p;
}
