// Subtrees that a heal brought to a source snapshot newer than the writer's position. Events at or below the
// snapshot's index for such a subtree are already in it: replaying them would move keys back in time.
import { isWithin } from '../../etcd/v2/paths.js';

interface Covered {
  /** Source key of the healed subtree. */
  key: string;
  /** Source index of the snapshot it was reconciled to. */
  index: number;
}

export class Coverage {
  #entries: Covered[] = [];

  get size(): number {
    return this.#entries.length;
  }

  add(srcKey: string, index: number): void {
    this.#entries.push({ key: srcKey, index });
  }

  /**
   * Whether the op for a source event at `index` on `srcKey` is to be skipped. `removesSubtree`: the op deletes
   * the key with everything below it. Such a delete above a covered subtree is applied (it takes the subtree
   * back to the source's state at `index`), and the events that follow it replay forward from there.
   */
  skip(srcKey: string, index: number, removesSubtree: boolean): boolean {
    if (this.#entries.length === 0) return false;
    if (this.#entries.some((c) => index <= c.index && isWithin(srcKey, c.key))) return true;
    if (removesSubtree) this.#entries = this.#entries.filter((c) => !(index <= c.index && isWithin(c.key, srcKey)));
    return false;
  }

  /** Forgets what the writer has moved past. */
  prune(appliedIndex: number): void {
    if (this.#entries.length) this.#entries = this.#entries.filter((c) => c.index > appliedIndex);
  }
}
