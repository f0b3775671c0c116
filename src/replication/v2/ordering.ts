// Which order destination writes follow, decided per --ordering. 'adaptive' keeps source order unless the stored
// index is about to fall out of etcd's history window: losing the window forces a snapshot reconcile, which
// reorders far more than letting writes to unrelated keys overlap for a while.
import type { Ordering } from '../ports.js';
import type { WriteOrdering } from './writer.js';

/** Adaptive: below this much headroom writes to unrelated keys may overlap ... */
export const REORDER_BELOW_HEADROOM = 250;
/** ... until the headroom is back above this (hysteresis: no flapping around one threshold). */
export const STRICT_ABOVE_HEADROOM = 500;

export interface OrderingChange {
  reordering: boolean;
  headroomEvents: number;
}

/** Lives as long as the process (across runner restarts), so entering and leaving is reported once each. */
export class OrderingPolicy {
  #reordering: boolean;
  #since: number | null;
  #totalMs = 0;

  constructor(
    readonly mode: Ordering,
    private readonly onChange: (change: OrderingChange) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    this.#reordering = mode === 'key';
    this.#since = this.#reordering ? now() : null;
  }

  /** True while writes to unrelated keys may overlap. */
  get reordering(): boolean {
    return this.#reordering;
  }

  get writerOrdering(): WriteOrdering {
    return this.#reordering ? 'key' : 'strict';
  }

  /** Milliseconds spent reordering so far, the current stretch included. */
  reorderingMs(): number {
    return this.#totalMs + (this.#since === null ? 0 : this.now() - this.#since);
  }

  /** Feeds the stored index's window headroom; returns true when the ordering changed. */
  update(headroomEvents: number | null): boolean {
    if (this.mode !== 'adaptive' || headroomEvents === null) return false;
    const next = this.#reordering ? headroomEvents <= STRICT_ABOVE_HEADROOM : headroomEvents < REORDER_BELOW_HEADROOM;
    if (next === this.#reordering) return false;
    this.#reordering = next;
    const now = this.now();
    if (next) this.#since = now;
    else if (this.#since !== null) {
      this.#totalMs += now - this.#since;
      this.#since = null;
    }
    this.onChange({ reordering: next, headroomEvents });
    return true;
  }
}
