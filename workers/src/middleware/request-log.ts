/**
 * One structured JSON log line per request. Fields accumulate while the request runs; a streamed
 * response defers the line until the stream ends, so tokens and total time are final.
 */
export interface LogFields {
  request_id?: string;
  client_request_id?: string;
  method?: string;
  path?: string;
  status?: number;
  key?: string;
  model?: string;
  backend?: string;
  stream?: boolean;
  prompt_tokens?: number;
  completion_tokens?: number;
  cached_tokens?: number;
  finish_reason?: string;
  /** A backend limit that ended the answer (finish_reason "length"), e.g. wasm_time_limit. */
  cut_by?: string;
  ttft_ms?: number;
  total_ms?: number;
  retries?: number;
  route?: string;
  error_code?: string;
  error?: string;
}

export class RequestLog {
  private readonly fields: LogFields = {};
  private readonly startMs = Date.now();
  private deferred = false;
  private emitted = false;

  constructor(private readonly sink: (line: string) => void = (l) => console.log(l)) {}

  set(fields: LogFields): void {
    Object.assign(this.fields, fields);
  }

  /** Ms since the request arrived (workerd advances the clock only across I/O). */
  elapsedMs(): number {
    return Date.now() - this.startMs;
  }

  /** A streamed response calls this, then `emit()` when the stream ends. */
  defer(): void {
    this.deferred = true;
  }

  get isDeferred(): boolean {
    return this.deferred;
  }

  emit(): void {
    if (this.emitted) return;
    this.emitted = true;
    this.sink(JSON.stringify({ msg: "request", ...this.fields, total_ms: this.fields.total_ms ?? this.elapsedMs() }));
  }
}
