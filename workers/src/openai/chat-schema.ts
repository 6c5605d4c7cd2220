/** POST /v1/chat/completions request body (the subset of OpenAI's that this edge serves). */
import { z } from "zod";
import { sloHintSchema } from "../slo/hint";
import { checkStreamOptions, neutral, sampling, text, unsupported } from "./common-schema";

export const MAX_MESSAGES = 4096;

const TextPart = z.object({ type: z.literal("text"), text: text() }).strict();
const Part = z
  .object({ type: z.string() })
  .passthrough()
  .superRefine((p, ctx) => {
    if (p.type !== "text") {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["type"], ...unsupported(`content part type '${p.type}' is not supported (text only)`) });
    }
  })
  .pipe(TextPart);

const Content = z.union([text(), z.array(Part).min(1, "content parts cannot be empty").max(1024)]);
const name = z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/, "letters, digits, _ and - only").optional();

const SystemMessage = z.object({ role: z.literal("system"), content: Content, name }).strict();
const DeveloperMessage = z.object({ role: z.literal("developer"), content: Content, name }).strict();
const UserMessage = z.object({ role: z.literal("user"), content: Content, name }).strict();
const AssistantMessage = z
  .object({
    role: z.literal("assistant"),
    content: Content.nullish(),
    name,
    refusal: z.string().nullish(),
    tool_calls: z.array(z.unknown()).nullish().refine((v) => !v || v.length === 0, unsupported("tool_calls are not supported")),
    function_call: z.unknown().refine((v) => v == null, unsupported("function_call is not supported")),
  })
  .strict();

const Message = z
  .object({ role: z.string() })
  .passthrough()
  .superRefine((m, ctx) => {
    if (!["system", "developer", "user", "assistant", "tool", "function"].includes(m.role)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["role"], message: `unknown role '${m.role}'` });
    } else if (m.role === "tool" || m.role === "function") {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["role"], ...unsupported(`role '${m.role}' is not supported (no tool calling)`) });
    }
  })
  .pipe(z.discriminatedUnion("role", [SystemMessage, DeveloperMessage, UserMessage, AssistantMessage]));

export const ChatCompletionRequest = z
  .object({
    model: z.string().min(1).max(256),
    messages: z.array(Message).min(1, "messages must hold at least one message").max(MAX_MESSAGES),
    ...sampling,
    ...neutral,
    max_tokens: z.number().int().min(1).nullish(),
    max_completion_tokens: z.number().int().min(1).nullish(),
    logprobs: z.boolean().nullish().refine((v) => !v, unsupported("logprobs are not supported")),
    top_logprobs: z.number().int().min(0).max(20).nullish().refine((v) => !v, unsupported("top_logprobs are not supported")),
    response_format: z
      .object({ type: z.string() })
      .passthrough()
      .nullish()
      .refine((v) => !v || v.type === "text", unsupported("response_format other than text is not supported")),
    tools: z.array(z.unknown()).nullish().refine((v) => !v || v.length === 0, unsupported("tools are not supported")),
    tool_choice: z.unknown().refine((v) => v == null || v === "none" || v === "auto", unsupported("tool_choice is not supported")),
    parallel_tool_calls: z.boolean().nullish(),
    functions: z.array(z.unknown()).nullish().refine((v) => !v || v.length === 0, unsupported("functions are not supported")),
    function_call: z.unknown().refine((v) => v == null || v === "none" || v === "auto", unsupported("function_call is not supported")),
    modalities: z.array(z.string()).nullish().refine((v) => !v || v.every((m) => m === "text"), unsupported("only the text modality is supported")),
    audio: z.unknown().refine((v) => v == null, unsupported("audio output is not supported")),
    prediction: z.unknown().refine((v) => v == null, unsupported("prediction is not supported")),
    reasoning_effort: z.unknown().refine((v) => v == null, unsupported("reasoning_effort is not supported")),
    web_search_options: z.unknown().refine((v) => v == null, unsupported("web_search_options is not supported")),
    metadata: z.record(z.string().max(512)).nullish(),
    store: z.boolean().nullish(),
    service_tier: z.enum(["auto", "default"]).nullish(),
    safety_identifier: z.string().max(256).nullish(),
    /** EdgeServe extension: SLO hint (workers/src/slo/hint.ts). */
    edgeserve_slo: sloHintSchema.nullish(),
  })
  .strict()
  .superRefine(checkStreamOptions)
  .superRefine((b, ctx) => {
    if (b.max_tokens != null && b.max_completion_tokens != null && b.max_tokens !== b.max_completion_tokens) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["max_tokens"], message: "set max_completion_tokens or max_tokens, not both" });
    }
  });

export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;
export type ChatMessage = ChatCompletionRequest["messages"][number];

/** The message's text (content parts joined), as chat templates expect. */
export function messageText(m: ChatMessage): string {
  const c = m.content;
  if (c == null) return "";
  return typeof c === "string" ? c : c.map((p) => p.text).join("");
}
