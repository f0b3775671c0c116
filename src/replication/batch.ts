// Several source revisions in one destination Txn. etcd refuses a Txn that writes one key twice or puts a key
// a range delete of the same Txn covers ("duplicate key given in txn request"), and it need not: the Txn is
// one destination revision, so only the state after its last source revision is ever visible. A later write of
// a key replaces an earlier one; a range delete that overlaps anything already in the batch starts a new Txn.
import type { DstWrite, V3Destination } from './v3-destination.js';
import type { Log, ReplicationMetrics } from './ports.js';
import type { Change } from './types.js';
import { keyId } from './keyspace.js';

const inRange = (key: Buffer, w: { key: Buffer; rangeEnd: Buffer }): boolean => key.compare(w.key) >= 0 && key.compare(w.rangeEnd) < 0;
const rangesOverlap = (a: { key: Buffer; rangeEnd: Buffer }, b: { key: Buffer; rangeEnd: Buffer }): boolean =>
  a.key.compare(b.rangeEnd) < 0 && b.key.compare(a.rangeEnd) < 0;

export class TxnBatch {
  /** Single-key writes by key (a Map keeps first-insertion order; a replaced key keeps its slot). */
  readonly #single = new Map<string, DstWrite>();
  readonly #ranges: { key: Buffer; rangeEnd: Buffer }[] = [];

  constructor(private readonly maxOps: number) {}

  get size(): number {
    return this.#single.size + this.#ranges.length;
  }

  /**
   * Adds one change's writes when they fit (with one op left for the checkpoint) and conflict with no range;
   * returns false and leaves the batch as it was otherwise.
   */
  tryAdd(writes: DstWrite[]): boolean {
    let added = 0;
    const ranges: { key: Buffer; rangeEnd: Buffer }[] = [];
    for (const w of writes) {
      if (w.kind === 'delete' && w.rangeEnd) {
        const r = { key: w.key, rangeEnd: w.rangeEnd };
        if (this.#ranges.some((x) => rangesOverlap(x, r))) return false;
        for (const k of this.#single.values()) if (inRange(k.key, r)) return false;
        ranges.push(r);
        added++;
      } else {
        if (this.#ranges.some((r) => inRange(w.key, r))) return false;
        if (!this.#single.has(keyId(w.key))) added++;
      }
    }
    if (this.size + added + 1 > this.maxOps) return false;
    for (const w of writes) {
      if (w.kind === 'delete' && w.rangeEnd) continue;
      const id = keyId(w.key);
      this.#single.delete(id); // the later write goes after everything before it
      this.#single.set(id, w);
    }
    this.#ranges.push(...ranges);
    return true;
  }

  writes(): DstWrite[] {
    return [...this.#ranges.map((r): DstWrite => ({ kind: 'delete', key: r.key, rangeEnd: r.rangeEnd })), ...this.#single.values()];
  }
}

/**
 * A source revision with more operations than one Txn may carry (a range delete of 300 keys): one range delete
 * when the deleted keys are all the destination holds between the first and the last of them; otherwise it is
 * split over several Txns — logged and counted, since the destination then shows part of a revision.
 */
export async function oversizeRevision(
  { dst, log, metrics }: { dst: V3Destination; log: Log; metrics: Pick<ReplicationMetrics, 'rangeDeletes' | 'splitRevisions'> },
  change: Change,
  writes: DstWrite[],
): Promise<DstWrite[]> {
  if (writes.every((w) => w.kind === 'delete' && !w.rangeEnd)) {
    const sorted = writes.map((w) => w.key).sort(Buffer.compare);
    const first = sorted[0]!;
    const last = sorted[sorted.length - 1]!;
    const deleting = new Set(sorted.map(keyId));
    const present = await dst.keysBetween(first, last);
    if (present.every((k) => deleting.has(keyId(k)))) {
      metrics.rangeDeletes.inc();
      return [{ kind: 'delete', key: first, rangeEnd: Buffer.concat([last, Buffer.from([0])]) }];
    }
  }
  const per = dst.maxOps - 1;
  metrics.splitRevisions.inc();
  log.warn(
    { revision: change.revision, operations: writes.length, maxTxnOps: dst.maxOps, txns: Math.ceil(writes.length / per) },
    'a source revision has more operations than a destination Txn may carry: it is applied in several Txns (the destination shows part of it in between)',
  );
  let i = 0;
  for (; i + per < writes.length; i += per) await dst.commit(writes.slice(i, i + per), null);
  return writes.slice(i);
}
