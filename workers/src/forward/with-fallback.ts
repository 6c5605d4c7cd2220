/**
 * Runs a generation on the first backend, moving to the next only if the one before failed
 * before producing anything (a retryable error as its first event). At most `maxAttempts`
 * backends are tried: the issue asks for one retry on another pod.
 */
import type { BackendEvent, GenerateParams, InferenceBackend } from "../backends/types";

export interface Attempt {
  backend: InferenceBackend;
  error?: Extract<BackendEvent, { type: "error" }>;
}

export async function* withFallback(
  backends: readonly InferenceBackend[],
  params: GenerateParams,
  attempts: Attempt[],
  maxAttempts = 2,
): AsyncGenerator<BackendEvent> {
  const tries = backends.slice(0, maxAttempts);
  for (let i = 0; i < tries.length; i++) {
    const attempt: Attempt = { backend: tries[i] };
    attempts.push(attempt);
    let first = true;
    for await (const ev of tries[i].generate(params)) {
      if (first && ev.type === "error" && ev.retryable && i + 1 < tries.length && !params.signal.aborted) {
        attempt.error = ev;
        break;
      }
      first = false;
      yield ev;
    }
    if (!attempt.error) return;
  }
}
