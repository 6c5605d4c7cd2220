import { describe, expect, it } from "vitest";
import Ajv2020 from "ajv/dist/2020";
import schema from "../protocol/pod-protocol.schema.json";
import hashVectors from "../vectors/block-hash.json";
import protocolVectors from "../vectors/protocol/cases.json";
import { blockHashes } from "./block-hash";

describe("block hash v1 vectors", () => {
  for (const c of hashVectors.cases) {
    it(c.name, async () => {
      expect(await blockHashes(c.model, c.tokens, c.block_size)).toEqual(c.hashes);
    });
  }
  it("maxBlocks stops early and agrees with the full chain", async () => {
    const c = hashVectors.cases.find((x) => x.hashes.length >= 3)!;
    expect(await blockHashes(c.model, c.tokens, c.block_size, 2)).toEqual(c.hashes.slice(0, 2));
  });
  it("rejects a token that is not a u32", async () => {
    await expect(blockHashes("m", [1, 2, -3, 4], 4)).rejects.toThrow(/not a u32/);
  });
});

describe("pod protocol schema vectors", () => {
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  ajv.addSchema(schema);
  for (const c of protocolVectors.cases) {
    it(`${c.def}: ${c.name} → ${c.valid ? "valid" : "invalid"}`, () => {
      const validate = ajv.getSchema(`edgeserve:pod-protocol/v1#/$defs/${c.def}`)!;
      expect(validate).toBeTypeOf("function");
      expect(validate(c.message)).toBe(c.valid);
    });
  }
});
