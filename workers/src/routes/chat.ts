/** POST /v1/chat/completions */
import type { Context } from "hono";
import { badRequest } from "../errors";
import { buildJob } from "../generate/job";
import { respond, type RespondDeps } from "../generate/respond";
import { resolveModel } from "../models";
import { ChatCompletionRequest, messageText } from "../openai/chat-schema";
import { parseBody } from "../openai/validate";
import { getTokenizer } from "../tokenize";
import type { AppEnv } from "../types";
import { refuseIfOverLimit } from "../generate/rate-limit";
import { refuseTextBeyondContext } from "./before-tokenizing";

export function chatCompletions(deps: RespondDeps = {}) {
  return async (c: Context<AppEnv>) => {
    const body = await parseBody(c, ChatCompletionRequest);
    const spec = resolveModel(body.model);
    const [tokenizer] = await Promise.all([getTokenizer(c.env.MODELS, spec), refuseIfOverLimit(c)]);
    let prompt: string;
    try {
      prompt = tokenizer.applyChatTemplate(
        body.messages.map(templateMessage),
        { addGenerationPrompt: true },
      );
    } catch (e) {
      // Templates raise on conversations they do not accept (e.g. roles out of order).
      throw badRequest(`The model's chat template rejected the messages: ${(e as Error).message}`, "messages", "invalid_messages");
    }
    refuseTextBeyondContext(prompt, spec, tokenizer, "messages");
    const ids = tokenizer.encode(prompt);
    const maxParam = body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
    const job = await buildJob(c, "chat", spec, tokenizer, ids, body.max_completion_tokens ?? body.max_tokens, maxParam, body);
    return respond(c, job, deps);
  };
}

/**
 * One message as the chat template gets it. `developer` (OpenAI's newer name for the system
 * role) becomes `system`: templates, SmolLM2's included, know only system/user/assistant.
 * `name` is passed on as `message.name` for templates that use it; SmolLM2's does not, so there
 * it has no effect.
 */
export function templateMessage(m: ChatCompletionRequest["messages"][number]): { role: string; content: string; name?: string } {
  const role = m.role === "developer" ? "system" : m.role;
  return m.name !== undefined ? { role, content: messageText(m), name: m.name } : { role, content: messageText(m) };
}
