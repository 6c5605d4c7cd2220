import { describe, expect, it } from "vitest";
import { configDefaults, loadConfig } from "./index";

const key = (name: string, k = `sk-${name}-0000`) => ({ key: k, name, rpm: 1, tpm: 1 });

describe("loadConfig", () => {
  it("reads the vars and spreads in the defaults", () => {
    const c = loadConfig({ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "s".repeat(8), POD_IDLE_TIMEOUT_MS: "500" });
    expect(c).toMatchObject({ ...configDefaults, podIdleTimeoutMs: 500, podSecret: "ssssssss" });
    expect(c.apiKeys.map((k) => k.name)).toEqual(["a"]);
    expect(c.attentionByClass).toEqual({});
  });

  it("reads sparse-attention settings per SLO class", () => {
    const c = loadConfig({
      API_KEYS: JSON.stringify([key("a")]),
      POD_SECRET: "s".repeat(8),
      ATTENTION_BY_CLASS: JSON.stringify({ batch: { sparse: true, token_budget: 2048, reselect_every: 8 } }),
    });
    expect(c.attentionByClass).toEqual({ batch: { sparse: true, token_budget: 2048, reselect_every: 8 } });
  });

  it.each([
    [{ API_KEYS: "not json", POD_SECRET: "x".repeat(8) }, /API_KEYS is not valid JSON/],
    [{ API_KEYS: "[]", POD_SECRET: "x".repeat(8) }, /at least one key/],
    [{ API_KEYS: JSON.stringify([key("a"), key("a", "sk-other-0000")]), POD_SECRET: "x".repeat(8) }, /names must be unique/],
    [{ API_KEYS: JSON.stringify([key("a", "sk-same-0000"), key("b", "sk-same-0000")]), POD_SECRET: "x".repeat(8) }, /keys must be unique/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "short" }, /podSecret/],
    [{ API_KEYS: JSON.stringify([{ ...key("a"), rpm: 0 }]), POD_SECRET: "x".repeat(8) }, /apiKeys\.0\.rpm/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), HEARTBEAT_MS: "soon" }, /heartbeatMs/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), ATTENTION_BY_CLASS: "{" }, /ATTENTION_BY_CLASS is not valid JSON/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), ATTENTION_BY_CLASS: '{"fast": {}}' }, /attentionByClass/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), ATTENTION_BY_CLASS: '{"batch": {"token_budget": 8}}' }, /attentionByClass\.batch\.token_budget/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), ATTENTION_BY_CLASS: '{"batch": {"window_tokens": 0}}' }, /attentionByClass\.batch\.window_tokens/],
    [{ API_KEYS: JSON.stringify([key("a")]), POD_SECRET: "x".repeat(8), ATTENTION_BY_CLASS: '{"batch": {"budget": 2048}}' }, /attentionByClass\.batch/],
  ])("refuses bad configuration %#", (vars, message) => {
    expect(() => loadConfig(vars)).toThrow(message);
  });
});
