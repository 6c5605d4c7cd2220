/**
 * StreamingLLM KV slots: attention sinks + recent window, constant memory.
 * Position p goes to slot p while p < sink, then to sink + (p − sink) mod window, overwriting
 * the oldest windowed token. Keys keep the RoPE of their absolute position (no re-rotation), so
 * past the model's trained context length quality is not what the paper measured.
 */
import type { RuntimeOptions } from "./config";

export class StreamingKV {
  readonly capacity: number;
  constructor(private readonly o: RuntimeOptions) {
    this.capacity = o.sinkTokens + o.windowTokens;
  }
  /** Cache slot that position `pos` is written to. */
  slot(pos: number): number {
    return pos < this.o.sinkTokens ? pos : this.o.sinkTokens + ((pos - this.o.sinkTokens) % this.o.windowTokens);
  }
  /** How many slots hold valid entries once position `pos` is written. */
  valid(pos: number): number {
    return Math.min(pos + 1, this.capacity);
  }
}
