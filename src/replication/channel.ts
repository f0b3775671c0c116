// A bounded hand-over from a push producer (a watch callback) to a pull consumer (for await). The producer
// waits on room(); the consumer sees the items in order, then the end or the producer's error.
export class Channel<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  #done = false;
  #error: unknown = undefined;
  #wakeConsumer: (() => void) | null = null;
  #roomWaiters: (() => void)[] = [];

  /** `highWater` 0: lock-step, the producer gets room only once the consumer waits with nothing queued. */
  constructor(private readonly highWater: number) {}

  get size(): number {
    return this.#items.length;
  }

  push(item: T): void {
    if (this.#done) return;
    this.#items.push(item);
    this.#wake();
  }

  /** Ends the stream after what is queued; with an error, the consumer throws it once the queue is drained. */
  end(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    this.#wake();
    this.#releaseRoom();
  }

  /** Resolves when the queue is below its high-water mark (or the channel ended). */
  room(): Promise<void> {
    const room = this.highWater > 0 ? this.#items.length < this.highWater : this.#items.length === 0 && this.#wakeConsumer !== null;
    if (room || this.#done) return Promise.resolve();
    return new Promise((r) => this.#roomWaiters.push(r));
  }

  #wake(): void {
    const wake = this.#wakeConsumer;
    this.#wakeConsumer = null;
    wake?.();
  }

  #releaseRoom(): void {
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.#items.length > 0) {
        const item = this.#items.shift() as T;
        if (this.#items.length < this.highWater) this.#releaseRoom();
        yield item;
        continue;
      }
      if (this.#done) {
        if (this.#error !== undefined) throw this.#error;
        return;
      }
      await new Promise<void>((r) => {
        this.#wakeConsumer = r;
        if (this.highWater === 0) this.#releaseRoom();
      });
    }
  }
}
