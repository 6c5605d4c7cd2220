/** A backend failure before any output, as the HTTP error the client gets. */
import { ApiError } from "../errors";
import type { Kind } from "../openai/responses";
import type { TextEvent } from "./text-stream";

type Failure = Extract<TextEvent, { type: "error" }>;

export function backendErrorToApi(ev: Failure | undefined, kind: Kind): ApiError {
  if (!ev) return new ApiError(502, "The backend ended without an answer.", { code: "backend_error" });
  const promptParam = kind === "chat" ? "messages" : "prompt";
  switch (ev.code) {
    case "prompt_too_long":
      return new ApiError(400, `The prompt is too long for the serving backend: ${ev.message}`, { param: promptParam, code: "context_length_exceeded" });
    case "overloaded":
      return new ApiError(503, `All backends for this model are overloaded; retry shortly. (${ev.message})`, { code: "overloaded", headers: { "retry-after": "1" } });
    case "model_not_installed":
      return new ApiError(503, `The model is not installed for the in-Worker runtime. (${ev.message})`, { code: "model_not_installed", headers: { "retry-after": "30" } });
    case "pod_timeout":
      return new ApiError(504, `The backend did not answer in time. (${ev.message})`, { code: "backend_timeout" });
    case "wasm_time_limit":
      // Only before the first token (a cut after it is finish_reason "length"): the prompt was
      // not read in time, so a shorter prompt is what helps, not fewer max_tokens.
      return new ApiError(504, `The in-Worker runtime could not read the prompt within the time one request may hold it (${ev.message}). Send a shorter prompt.`, { code: "backend_timeout" });
    default:
      return new ApiError(502, `The backend failed before producing output. (${ev.code}: ${ev.message})`, { code: "backend_error" });
  }
}

/** The same failure, as the `error` object of a mid-stream SSE event. */
export function midStreamError(ev: Failure | undefined): { message: string; type: string; param: null; code: string } {
  return {
    message: ev ? `The backend failed mid-answer. (${ev.code}: ${ev.message})` : "The backend ended without finishing the answer.",
    type: "server_error",
    param: null,
    code: ev?.code ?? "backend_error",
  };
}
