// Destination writes in strict source order, fast: they go to one connection (OrderedLane in src/etcd/v2/client.ts),
// where each is sent the moment the one before it is answered and etcd applies them one after the other.
//
// A lane write that fails (a dropped connection, a destination that refuses it) may have been applied all the
// same, and so may the writes queued behind it. Every failed write is redone the ordinary way (the caller's
// `fallback`: retries, repairs), one after the other in the order the failures came, once nothing is left on the
// lane, and only if the destination does not show it applied — or show a later write to the same key that was
// sent behind it, which etcd can only have applied after it: redoing it then would move the key back. No new
// write goes on the lane while redos are pending, so none overtakes them.
import type { LeafOp } from './apply.js';
import type { EtcdClient, OrderedLane } from '../../etcd/v2/client.js';
import { KeyNotFoundError, NotADirectoryError } from '../../etcd/errors.js';

export interface LaneStats {
  answered: number;
  busyMs: number;
}

export class StrictLane {
  readonly #lane: OrderedLane;
  /** Redos queued one behind the other; `#redoPending` of them not done. */
  #redos: Promise<void> = Promise.resolve();
  #redoPending = 0;
  /** Lane requests sent and not answered yet (undici fails the queued ones too when the connection drops). */
  #inFlight = 0;
  #drainWaiters: (() => void)[] = [];
  /** Time with at least one write on the lane, and the writes answered: their ratio is the rate the lane carries
   * while it is kept busy (the ordered ceiling at the destination's current write latency), whatever the load. */
  #busyMs = 0;
  #busySince = 0;
  #answered = 0;
  /** Lane writes sent, per destination key (index, outcome; null: deleted), until the checkpoint passes them. */
  readonly #sent = new Map<string, { index: number; outcome: string | null }[]>();

  constructor(
    private readonly dst: EtcdClient,
    depth: number,
    private readonly signal: AbortSignal,
    private readonly onLatency: () => () => void,
  ) {
    this.#lane = dst.orderedLane(depth);
  }

  /**
   * Applies `op` (the event at `index`) on the lane. `before`: the key's value right before the event (null: it
   * did not exist).
   */
  async apply(op: LeafOp, index: number, before: string | null, fallback: () => Promise<void>): Promise<void> {
    while (this.#redoPending > 0) await this.#redos;
    if (await this.#send(op, index)) return;
    this.#redoPending++;
    const redo = this.#redos.then(async () => {
      try {
        await this.#drained();
        if (!(await this.#applied(op, index, before))) await fallback();
      } finally {
        this.#redoPending--;
      }
    });
    this.#redos = redo.catch(() => {});
    await redo;
  }

  /** Forgets lane writes the checkpoint has passed: everything before them is settled. */
  prune(checkpoint: number): void {
    if (this.#sent.size === 0) return;
    for (const [key, sent] of this.#sent) {
      let n = 0;
      while (n < sent.length && sent[n]!.index <= checkpoint) n++;
      if (n === sent.length) this.#sent.delete(key);
      else if (n > 0) sent.splice(0, n);
    }
  }

  close(): Promise<void> {
    return this.#lane.close();
  }

  /** Writes answered and busy milliseconds so far (see #busyMs). */
  stats(): LaneStats {
    return { answered: this.#answered, busyMs: this.#busyMs + (this.#inFlight > 0 ? performance.now() - this.#busySince : 0) };
  }

  /** One write on the lane; false when it failed. */
  async #send(op: LeafOp, index: number): Promise<boolean> {
    const entry = { index, outcome: op.kind === 'put' ? op.value : null };
    const sent = this.#sent.get(op.key);
    if (sent) sent.push(entry);
    else this.#sent.set(op.key, [entry]);
    const end = this.onLatency();
    if (this.#inFlight++ === 0) this.#busySince = performance.now();
    try {
      if (op.kind === 'put') await this.#lane.put(op.key, { value: op.value, ttl: op.ttl, signal: this.signal });
      else await this.#lane.delete(op.key, { signal: this.signal });
    } catch (err) {
      // A delete whose key is gone already reached its goal.
      if (!(op.kind === 'delete' && (err instanceof KeyNotFoundError || err instanceof NotADirectoryError))) return false;
    } finally {
      if (--this.#inFlight === 0) {
        this.#busyMs += performance.now() - this.#busySince;
        for (const w of this.#drainWaiters.splice(0)) w();
      }
    }
    end();
    this.#answered++;
    return true;
  }

  #drained(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Whether a lane write that failed was applied after all (see the top of this file). */
  async #applied(op: LeafOp, index: number, before: string | null): Promise<boolean> {
    let have: string | null;
    try {
      const node = (await this.dst.get(op.key, { signal: this.signal })).body.node;
      if (node.dir) return false;
      have = node.value ?? '';
    } catch (err) {
      if (!(err instanceof KeyNotFoundError)) return false;
      have = null;
    }
    if (have === before) return false; // the key's state before the event proves nothing
    const own = op.kind === 'put' ? op.value : null;
    return have === own || (this.#sent.get(op.key) ?? []).some((e) => e.index > index && e.outcome === have);
  }
}
