/** POST /v1/completions (legacy): one text or token-id prompt, no chat template. */
import type { Context } from "hono";
import { badRequest } from "../errors";
import { buildJob } from "../generate/job";
import { respond, type RespondDeps } from "../generate/respond";
import { resolveModel } from "../models";
import { CompletionRequest, promptOf } from "../openai/completion-schema";
import { parseBody } from "../openai/validate";
import { getTokenizer } from "../tokenize";
import type { AppEnv } from "../types";
import { refuseIfOverLimit } from "../generate/rate-limit";
import { refuseTextBeyondContext } from "./before-tokenizing";

export function completions(deps: RespondDeps = {}) {
  return async (c: Context<AppEnv>) => {
    const body = await parseBody(c, CompletionRequest);
    const spec = resolveModel(body.model);
    const [tokenizer] = await Promise.all([getTokenizer(c.env.MODELS, spec), refuseIfOverLimit(c)]);
    const prompt = promptOf(body);
    let ids: number[];
    if ("text" in prompt) {
      refuseTextBeyondContext(prompt.text, spec, tokenizer, "prompt");
      // Text from the client is text: control-token spellings in it are not turned into tokens.
      ids = tokenizer.encode(prompt.text, { addSpecial: true, parseSpecial: false });
    } else {
      const bad = prompt.tokenIds.findIndex((t) => t >= tokenizer.vocabSize);
      if (bad >= 0) {
        throw badRequest(`Token id ${prompt.tokenIds[bad]} is outside the vocabulary (size ${tokenizer.vocabSize}).`, `prompt[${bad}]`, "invalid_token_id");
      }
      ids = prompt.tokenIds;
    }
    const job = await buildJob(c, "completion", spec, tokenizer, ids, body.max_tokens, "max_tokens", body);
    return respond(c, job, deps);
  };
}
