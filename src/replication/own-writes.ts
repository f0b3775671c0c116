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
