/** FIFO async lock; a waiter whose signal aborts leaves the queue. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  private waiting = 0;

  get queued(): number {
    return this.waiting;
  }

  /** Resolves to a release function once every earlier holder has released. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => mine);
    this.waiting++;
    try {
      await (signal ? Promise.race([prev, aborted(signal)]) : prev);
    } catch (e) {
      // Give our turn away as soon as it comes, so the queue behind us is not stuck.
      prev.then(release);
      throw e;
    } finally {
      this.waiting--;
    }
    return release;
  }
}

function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason ?? new Error("aborted"));
    else signal.addEventListener("abort", () => reject(signal.reason ?? new Error("aborted")), { once: true });
  });
}
