export * from "./block-hash";
export type * from "./pod-protocol";
export { default as podProtocolSchema } from "../protocol/pod-protocol.schema.json";
