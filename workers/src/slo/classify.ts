/**
 * The SLO classifier: which class a request is in and the targets that travel to the pod
 * (protocol `SloTargets`). Precedence: explicit hint > the API key's defaults > the request's shape.
 *
 * Shape rules (no hint, no key default):
 *   - a parent deadline (`deadline_at` given without a class) → compound (an agentic step);
 *   - tools offered → deadline (a tool call is useless until complete);
 *   - stream → interactive;
 *   - not streamed and max_tokens ≥ batchMinMaxTokens → batch;
 *   - otherwise → deadline.
 */
import type { SloClass, SloTargets } from "@edgeserve/shared";
import type { ClassDefaults, SloConfig } from "./config";
import type { SloHint } from "./hint";

/** What the route knows about the request when it classifies. */
export interface ClassifyInput {
  stream: boolean;
  hasTools: boolean;
  maxTokens: number;
  /** Output-length estimate for this (key, model), from OutputLengthEstimator. */
  estimatedOutputTokens: number;
  hint?: SloHint;
  /** The API key's configured defaults (a class and/or targets). */
  keyDefaults?: SloHint;
  /** Epoch ms of arrival; turns a `deadline_at` into a relative deadline. */
  nowMs: number;
}

export interface Classification {
  targets: SloTargets;
  /** Which input decided the class, for the debug header. */
  source: "hint" | "key" | "shape";
}

/**
 * Whether a chat request offers tools the model may call (OpenAI `tools` / legacy `functions`, with
 * `tool_choice` / `function_call` not "none"): such an answer is only useful once complete (a call
 * to execute), so the shape is deadline-like. The chat schema refuses non-empty tools today (no tool
 * calling yet), so this is false for every accepted request until tool calling lands.
 */
export function offersTools(f: { tools?: unknown[] | null; tool_choice?: unknown; functions?: unknown[] | null; function_call?: unknown }): boolean {
  const tools = (f.tools?.length ?? 0) > 0 && f.tool_choice !== "none";
  const functions = (f.functions?.length ?? 0) > 0 && f.function_call !== "none";
  return tools || functions;
}

function shapeClass(input: ClassifyInput, cfg: SloConfig, deadlineAt?: number): SloClass {
  if (deadlineAt !== undefined) return "compound";
  if (input.hasTools) return "deadline";
  if (input.stream) return "interactive";
  if (input.maxTokens >= cfg.batchMinMaxTokens) return "batch";
  return "deadline";
}

export function classify(input: ClassifyInput, cfg: SloConfig): Classification {
  const hint = input.hint ?? {};
  const key = input.keyDefaults ?? {};
  // Field by field: the hint's value, else the key's.
  const merged: SloHint = { ...key, ...hint };
  const source: Classification["source"] = hint.class ? "hint" : key.class ? "key" : "shape";
  const cls: SloClass = merged.class ?? shapeClass(input, cfg, merged.deadline_at);
  const d: ClassDefaults = cfg[cls];

  const est = Math.min(input.maxTokens, merged.expected_output_tokens ?? input.estimatedOutputTokens);
  const targets: SloTargets = { class: cls, expected_output_tokens: Math.max(1, est), priority: merged.priority ?? d.priority };

  const ttft = merged.ttft_ms ?? d.ttftMs;
  if (ttft !== undefined && cls !== "batch") targets.ttft_ms = ttft;
  const tpot = merged.tpot_ms ?? d.tpotMs;
  if (tpot !== undefined && cls === "interactive") targets.tpot_ms = tpot;

  let deadline: number | undefined;
  if (merged.deadline_at !== undefined) deadline = merged.deadline_at - input.nowMs;
  else if (merged.deadline_ms !== undefined) deadline = merged.deadline_ms;
  else if (d.deadlineBaseMs !== undefined) deadline = d.deadlineBaseMs + (d.deadlinePerTokenMs ?? 0) * est;
  // A chain step that arrives after its parent's deadline is already late: keep it urgent (1 ms)
  // rather than reject it; the pod orders it first and the attainment record shows the miss.
  if (deadline !== undefined) targets.deadline_ms = Math.max(1, deadline);
  return { targets, source };
}
