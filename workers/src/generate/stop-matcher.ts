/**
 * Stop sequences on detokenized text. Text is released only when it cannot be the start of a
 * stop sequence, so a match never needs to take back text already sent to the client.
 */
export class StopMatcher {
  private held = "";

  constructor(private readonly stops: readonly string[]) {}

  /** Adds text; returns what may be released now and whether a stop sequence matched. */
  push(text: string): { text: string; stopped: boolean } {
    this.held += text;
    if (this.stops.length === 0) {
      const out = this.held;
      this.held = "";
      return { text: out, stopped: false };
    }
    let cut = -1;
    for (const s of this.stops) {
      const i = this.held.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const out = this.held.slice(0, cut);
      this.held = "";
      return { text: out, stopped: true };
    }
    const keep = this.longestStopPrefixSuffix();
    const out = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return { text: out, stopped: false };
  }

  /** At the end of generation: whatever is held is plain text. */
  flush(): string {
    const out = this.held;
    this.held = "";
    return out;
  }

  /** Length of the longest suffix of `held` that is a proper prefix of some stop sequence. */
  private longestStopPrefixSuffix(): number {
    let best = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.held.length); k > best; k--) {
        if (this.held.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
