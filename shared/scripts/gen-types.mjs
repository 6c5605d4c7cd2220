// Generates src/pod-protocol.ts from the JSON Schema. `--check` fails if the file is stale.
import { compile } from "json-schema-to-typescript";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const schema = JSON.parse(readFileSync(here("../protocol/pod-protocol.schema.json"), "utf8"));
const outPath = here("../src/pod-protocol.ts");

// Compile each $def as a named export (the root schema has no body of its own).
const root = { ...schema, type: "object", properties: {}, additionalProperties: false };
root.properties = Object.fromEntries(Object.keys(schema.$defs).map((k) => [k, { $ref: `#/$defs/${k}` }]));
let ts = await compile(root, "PodProtocol", {
  bannerComment: "/* Generated from shared/protocol/pod-protocol.schema.json by scripts/gen-types.mjs. Do not edit. */",
  additionalProperties: false,
  unreachableDefinitions: true,
  style: { singleQuote: false },
});
if (process.argv.includes("--check")) {
  const current = readFileSync(outPath, "utf8");
  if (current !== ts) {
    console.error("shared/src/pod-protocol.ts is stale: run `npm run gen -w shared`");
    process.exit(1);
  }
  console.log("pod-protocol.ts matches the schema");
} else {
  writeFileSync(outPath, ts);
  console.log(`wrote ${outPath}`);
}
