import { describe, expect, it } from "vitest";
import { StopMatcher } from "./stop-matcher";

function run(stops: string[], pieces: string[]) {
  const m = new StopMatcher(stops);
  let out = "";
  for (const p of pieces) {
    const r = m.push(p);
    out += r.text;
    if (r.stopped) return { out, stopped: true };
  }
  return { out: out + m.flush(), stopped: false };
}

describe("StopMatcher", () => {
  it("passes text through without stops", () => {
    expect(run([], ["ab", "cd"])).toEqual({ out: "abcd", stopped: false });
  });
  it("cuts at a stop sequence split across pieces and never releases its prefix", () => {
    const m = new StopMatcher(["END"]);
    expect(m.push("hello E")).toEqual({ text: "hello ", stopped: false });
    expect(m.push("N")).toEqual({ text: "", stopped: false });
    expect(m.push("D and more")).toEqual({ text: "", stopped: true });
  });
  it("releases a held prefix that turned out not to be a stop", () => {
    expect(run(["END"], ["x E", "Nx"])).toEqual({ out: "x ENx", stopped: false });
  });
  it("takes the earliest of several stops", () => {
    expect(run(["bb", "a"], ["xxbba"])).toEqual({ out: "xx", stopped: true });
  });
  it("flushes held text at the end", () => {
    expect(run(["END"], ["abc EN"])).toEqual({ out: "abc EN", stopped: false });
  });
});
