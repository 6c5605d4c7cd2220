import { describe, expect, it } from "vitest";
import cases from "../../../shared/vectors/protocol/cases.json";
import { DEFAULT_MODEL } from "../models/catalog";
import { MAX_POD_MODELS, PodRegistration, RegistrationAtEdge } from "./registration-schema";

// The zod schema must agree with the shared JSON Schema on every PodRegistration vector.
const vectors = (cases.cases as { def: string; name: string; valid: boolean; message: unknown }[]).filter((c) => c.def === "PodRegistration");

describe("PodRegistration zod schema vs the shared protocol vectors", () => {
  it("has vectors to check", () => expect(vectors.length).toBeGreaterThan(0));
  for (const c of vectors) {
    it(`${c.name} → ${c.valid ? "valid" : "invalid"}`, () => {
      expect(PodRegistration.safeParse(c.message).success).toBe(c.valid);
    });
  }
});

describe("RegistrationAtEdge: the edge's policy on top of the protocol", () => {
  const reg = (cases.cases as { def: string; valid: boolean; message: Record<string, unknown> }[]).find((c) => c.def === "PodRegistration" && c.valid)!.message;
  it("accepts catalog models and names the first unknown one", () => {
    expect(RegistrationAtEdge.safeParse({ ...reg, models: [DEFAULT_MODEL] }).success).toBe(true);
    const r = RegistrationAtEdge.safeParse({ ...reg, models: [DEFAULT_MODEL, "m"] });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]).toMatchObject({ path: ["models", 1], params: { code: "model_not_found" } });
  });
  it(`bounds models at ${MAX_POD_MODELS}`, () => {
    expect(RegistrationAtEdge.safeParse({ ...reg, models: Array(MAX_POD_MODELS).fill(DEFAULT_MODEL) }).success).toBe(true);
    expect(RegistrationAtEdge.safeParse({ ...reg, models: Array(MAX_POD_MODELS + 1).fill(DEFAULT_MODEL) }).success).toBe(false);
  });
});
