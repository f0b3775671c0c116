// Which destination writes were ours: both destination kinds watch their own subtree and heal what others changed.

/**
 * The destination writes this process made, told apart from others' by what they wrote (their store index), not
 * by timing: an event on the destination watch is classified once every write that had begun before it arrived
 * has answered, so its index is known if it was ours.
 */
export class OwnWrites {
  readonly #seen = new Map<number, number>();
  static readonly KEEP_MS = 30_000;
  #issued = 0;
  /** Begun writes that have not answered yet, by sequence number. */
  readonly #open = new Set<number>();

  /** Called as a destination write is sent; returns its sequence number. */
  begin(): number {
    const seq = ++this.#issued;
    this.#open.add(seq);
    return seq;
  }

  /** Called when it answered (with the store index it got, when it succeeded). */
  end(seq: number, modifiedIndex?: number): void {
    this.#open.delete(seq);
    if (modifiedIndex !== undefined) this.record(modifiedIndex);
  }

  record(modifiedIndex: number): void {
    this.#seen.set(modifiedIndex, Date.now());
  }

  has(modifiedIndex: number): boolean {
    return this.#seen.has(modifiedIndex);
  }

  /** Sequence number of the latest write begun so far: an event arriving now can only be one of these. */
  get issued(): number {
    return this.#issued;
  }

  /** Sequence number of the oldest write still waiting for its answer (Infinity when none). */
  oldestOpen(): number {
    let oldest = Number.POSITIVE_INFINITY;
    for (const open of this.#open) if (open < oldest) oldest = open;
    return oldest;
  }

  prune(now = Date.now()): void {
    for (const [index, at] of this.#seen) {
      if (now - at < OwnWrites.KEEP_MS) break; // insertion order is time order
      this.#seen.delete(index);
    }
  }
}

/**
 * Events seen on a destination watch, waiting to be told ours or foreign: one classifier for both destination
 * kinds. An event is judged once every write of ours begun before it arrived has answered; events arrive in
 * store order and `issued` never decreases, so the judgeable ones are always a prefix of those waiting.
 */
export class ForeignChanges<K> {
  #pending: { index: number; key: K; issued: number }[] = [];
  #overflow = false;

  constructor(
    private readonly own: OwnWrites,
    /** Events kept waiting at most; beyond, `take` reports an overflow (a flood of foreign changes). */
    private readonly maxPending = Number.POSITIVE_INFINITY,
  ) {}

  /** An event at store index/revision `index` on `key`, as it arrives from the watch. */
  note(index: number, key: K): void {
    if (this.own.has(index)) return; // our write, already answered
    if (this.#pending.length >= this.maxPending) this.#overflow = true;
    else this.#pending.push({ index, key, issued: this.own.issued });
  }

  /** The keys of the foreign events judgeable now (in arrival order), and whether any were dropped since the last
   * call (then the caller heals everything it owns). */
  take(): { foreign: K[]; overflow: boolean } {
    this.own.prune();
    const oldestOpen = this.own.oldestOpen();
    let ready = 0;
    while (ready < this.#pending.length && this.#pending[ready]!.issued < oldestOpen) ready++;
    const due = this.#pending.splice(0, ready);
    const overflow = this.#overflow;
    this.#overflow = false;
    return { foreign: due.filter((p) => !this.own.has(p.index)).map((p) => p.key), overflow };
  }
}
