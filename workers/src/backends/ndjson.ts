/**
 * Newline-delimited JSON from a byte stream, one parsed value per line. A line that is not JSON
 * is returned as a `ParseFailure` so the caller decides what a broken pod deserves.
 */
export interface ParseFailure {
  parseError: string;
  line: string;
}

/** Longest line accepted from a pod; a pod that sends more is broken, not chatty. */
export const MAX_LINE_CHARS = 4 * 1024 * 1024;

export class NdjsonReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  private done = false;

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader();
  }

  /**
   * The next value, `undefined` at the end of the stream. `waitMs` bounds each wait for bytes;
   * when it passes this rejects with a `TimeoutError` (the caller cancels the stream).
   */
  async next(waitMs: number): Promise<unknown | ParseFailure | undefined> {
    for (;;) {
      const nl = this.buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line === "") continue;
        return parseLine(line);
      }
      if (this.done) {
        const rest = this.buffer.trim();
        this.buffer = "";
        return rest === "" ? undefined : parseLine(rest);
      }
      if (this.buffer.length > MAX_LINE_CHARS) {
        return { parseError: `line longer than ${MAX_LINE_CHARS} characters`, line: this.buffer.slice(0, 80) };
      }
      const chunk = await withTimeout(this.reader.read(), waitMs);
      if (chunk.done) {
        this.done = true;
        this.buffer += this.decoder.decode();
      } else {
        this.buffer += this.decoder.decode(chunk.value, { stream: true });
      }
    }
  }

  cancel(reason?: unknown): void {
    this.reader.cancel(reason).catch(() => {});
  }
}

export class TimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`no data for ${ms} ms`);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(ms)), ms);
  });
  return Promise.race([p, t]).finally(() => timer !== null && clearTimeout(timer));
}

function parseLine(line: string): unknown | ParseFailure {
  try {
    return JSON.parse(line);
  } catch (e) {
    return { parseError: (e as Error).message, line: line.slice(0, 80) };
  }
}

export function isParseFailure(v: unknown): v is ParseFailure {
  return typeof v === "object" && v !== null && "parseError" in v;
}
