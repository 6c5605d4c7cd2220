/**
 * Backend events → text deltas and one final outcome. Detokenizes with the tokenizer's stream
 * decoder (a multi-byte character split across tokens comes out whole), hides stop tokens,
 * applies stop sequences and stops the backend when one matches (leaving the loop runs the
 * backend's cleanup, which cancels the pod's work).
 */
import type { BackendEvent, BackendUsage, FinishReason } from "../backends/types";
import type { StreamDecoder } from "../tokenize";
import { StopMatcher } from "./stop-matcher";

export type TextEvent =
  | { type: "text"; text: string }
  | { type: "final"; finishReason: FinishReason; usage: BackendUsage; cutBy?: string }
  | { type: "error"; code: string; message: string; retryable: boolean; produced: boolean };

export interface TextStreamOptions {
  decoder: StreamDecoder;
  stopTokenIds: readonly number[];
  stop: readonly string[];
  promptTokens: number;
  /** Called once, when the first token arrives (for TTFT). */
  onFirstToken?: () => void;
}

export async function* textStream(events: AsyncIterable<BackendEvent>, o: TextStreamOptions): AsyncGenerator<TextEvent> {
  const hidden = new Set(o.stopTokenIds);
  const matcher = new StopMatcher(o.stop);
  let completionTokens = 0;
  let produced = false;
  let afterStop = false;
  // The loop is left with `break` so that the backend's iterator is closed (and its work
  // cancelled) before the final event is handed on.
  let end: TextEvent | undefined;
  for await (const ev of events) {
    if (ev.type === "tokens") {
      if (!produced) o.onFirstToken?.();
      produced = true;
      // A stop token ends the answer even if the backend goes on after it (one that ignores
      // stop_token_ids): nothing after it is shown or counted. A stop token that ends its record
      // waits for the backend's final record (its usage, cached tokens) unless more tokens come.
      const at = afterStop ? 0 : ev.tokenIds.findIndex((t) => hidden.has(t));
      const cut = at >= 0 && (afterStop || at < ev.tokenIds.length - 1);
      const ids = cut ? ev.tokenIds.slice(0, at + (afterStop ? 0 : 1)) : ev.tokenIds;
      if (at >= 0) afterStop = true;
      completionTokens += ids.length;
      const visible = ids.filter((t) => !hidden.has(t));
      let { text, stopped } = matcher.push(o.decoder.push(visible));
      if (cut && !stopped) {
        const last = matcher.push(o.decoder.flush());
        text += last.stopped ? last.text : last.text + matcher.flush();
        stopped = true;
      }
      if (text) yield { type: "text", text };
      if (stopped) {
        end = { type: "final", finishReason: "stop", usage: { promptTokens: o.promptTokens, completionTokens, cachedTokens: 0 } };
        break;
      }
    } else if (ev.type === "final") {
      const { text, stopped } = matcher.push(o.decoder.flush());
      const rest = stopped ? text : text + matcher.flush();
      if (rest) yield { type: "text", text: rest };
      end = { type: "final", finishReason: stopped || afterStop ? "stop" : ev.finishReason, usage: ev.usage, ...(ev.cutBy && !stopped && { cutBy: ev.cutBy }) };
      break;
    } else {
      end = { ...ev, produced };
      break;
    }
  }
  yield end ?? { type: "error", code: "backend_ended", message: "the backend ended without a final record", retryable: false, produced };
}

