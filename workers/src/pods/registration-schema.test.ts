import { describe, expect, it } from "vitest";
import cases from "../../../shared/vectors/protocol/cases.json";
import { PodRegistration } from "./registration-schema";

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
