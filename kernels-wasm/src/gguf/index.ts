export * from "./reader";
export * from "./types";
