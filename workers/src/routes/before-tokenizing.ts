/**
 * A cheap refusal the completion routes make before they pay for tokenization (up to 1M
 * characters per text field, 4 MiB per body): text so long that no tokenization could fit it in
 * the model's context. (The other, a key already over its limits, is rate-limit.ts's
 * refuseIfOverLimit.)
 */
import { ApiError } from "../errors";
import type { ModelSpec } from "../models";
import type { Tokenizer } from "../tokenize";

/**
 * 400 context_length_exceeded for text that must tokenize to at least the whole context. No token
 * of `tokenizer` stands for more than `maxTokenBytes` UTF-8 bytes, and a string's UTF-16 length
 * never exceeds its UTF-8 length, so `text` has at least ceil(text.length / maxTokenBytes)
 * tokens; above (contextLength - 1) x maxTokenBytes characters that is the whole context or more,
 * which buildJob would refuse after tokenizing. Sound, never a false refusal: for SmolLM2 (81
 * bytes at most, a newline and 80 spaces) the bound is 663 471 characters.
 */
export function refuseTextBeyondContext(text: string, spec: ModelSpec, tokenizer: Tokenizer, param: string): void {
  const ctx = spec.contextLength;
  const most = (ctx - 1) * tokenizer.maxTokenBytes;
  if (text.length > most) {
    const atLeast = Math.ceil(text.length / tokenizer.maxTokenBytes);
    throw new ApiError(
      400,
      `This model's maximum context length is ${ctx} tokens, but the prompt has ${text.length} characters, which is at least ${atLeast} tokens (no token of this model stands for more than ${tokenizer.maxTokenBytes} characters).`,
      { param, code: "context_length_exceeded" },
    );
  }
}
