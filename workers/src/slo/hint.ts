/**
 * Explicit SLO hints from the client. Two places, merged field by field (header wins):
 *
 * Header `x-edgeserve-slo`: a bare class, or `key=value` pairs separated by `;` or `,`:
 *   x-edgeserve-slo: interactive
 *   x-edgeserve-slo: class=deadline; deadline_ms=8000
 *   x-edgeserve-slo: class=compound; deadline_at=1795000000000
 *
 * Body extension `edgeserve_slo` (a top-level field of the chat/completions body):
 *   {"model": "...", "messages": [...], "edgeserve_slo": {"class": "batch"}}
 *
 * Fields: class (interactive | deadline | batch | compound), ttft_ms, tpot_ms, deadline_ms (relative
 * to arrival), deadline_at (epoch ms; how a compound chain passes its parent's deadline on),
 * expected_output_tokens, priority (0..9). Anything else is a 400.
 */
import { z } from "zod";
import type { SloClass } from "@edgeserve/shared";
import { badRequest } from "../errors";

export const SLO_HEADER = "x-edgeserve-slo";
export const SLO_BODY_FIELD = "edgeserve_slo";

const pos = z.number().finite().positive();

export const sloHintSchema = z
  .object({
    class: z.enum(["interactive", "deadline", "batch", "compound"]).optional(),
    ttft_ms: pos.optional(),
    tpot_ms: pos.optional(),
    deadline_ms: pos.optional(),
    deadline_at: pos.optional(),
    expected_output_tokens: z.number().int().positive().optional(),
    priority: z.number().int().min(0).max(9).optional(),
  })
  .strict();

export type SloHint = z.infer<typeof sloHintSchema> & { class?: SloClass };

const NUMERIC = new Set(["ttft_ms", "tpot_ms", "deadline_ms", "deadline_at", "expected_output_tokens", "priority"]);

function bad(where: string, detail: string): never {
  throw badRequest(`invalid SLO hint in ${where}: ${detail}`, where, "invalid_slo_hint");
}

function check(where: string, raw: unknown): SloHint {
  const parsed = sloHintSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    bad(where, `${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return parsed.data;
}

/** Parses the header value; undefined when absent or blank. */
export function parseSloHeader(value: string | null | undefined): SloHint | undefined {
  if (value == null || value.trim() === "") return undefined;
  if (value.length > 512) bad(SLO_HEADER, `expected at most 512 characters, got ${value.length}`);
  const raw: Record<string, unknown> = {};
  for (const part of value.split(/[;,]/)) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    if (eq < 0) {
      if ("class" in raw) bad(SLO_HEADER, `"${item}" given after a class`);
      raw.class = item;
      continue;
    }
    const key = item.slice(0, eq).trim();
    const val = item.slice(eq + 1).trim();
    if (NUMERIC.has(key)) {
      const n = Number(val);
      if (val === "" || !Number.isFinite(n)) bad(SLO_HEADER, `${key}: expected a number, got "${val}"`);
      raw[key] = n;
    } else {
      raw[key] = val;
    }
  }
  return check(SLO_HEADER, raw);
}

/** Reads the `edgeserve_slo` body extension; undefined when absent. */
export function parseSloBody(body: unknown): SloHint | undefined {
  if (body === null || typeof body !== "object") return undefined;
  const raw = (body as Record<string, unknown>)[SLO_BODY_FIELD];
  if (raw === undefined) return undefined;
  return check(`body.${SLO_BODY_FIELD}`, raw);
}

/** Header fields override body fields. */
export function mergeHints(body?: SloHint, header?: SloHint): SloHint | undefined {
  if (!body && !header) return undefined;
  return { ...body, ...header };
}
