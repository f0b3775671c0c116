// A v3 cluster as the replication destination: every write is one Txn that carries whole source revisions and
// the checkpoint after them, so the checkpoint can never pass or trail the data it describes, and a restart
// resumes exactly where the destination is.
import type { OwnWrites } from './own-writes.js';
import { keyId, rangeOf, type ByteKeyMap, type KeyRange } from './keyspace.js';
import type { DestinationEntry } from './types.js';
import { BadCheckpointError, FencedError, SwitchoverFencedError } from '../etcd/errors.js';
import { describeFence, fenceKey } from './fence.js';
import { TooManyOpsError } from '../etcd/v3/errors.js';
import { prefixEnd, type Compare, type TxnOp, type V3Client } from '../etcd/v3/client.js';

export type DstWrite =
  | { kind: 'put'; key: Buffer; value: Buffer; lease?: string }
  /** One key, or [key, rangeEnd) when rangeEnd is given. */
  | { kind: 'delete'; key: Buffer; rangeEnd?: Buffer };

const REPLICATION = rangeOf(Buffer.from('/__replication'));
const SLASH = Buffer.from('/');

/** The ranges that make up a subtree (key and key/...), without the checkpoints under /__replication. */
export function subtreeRanges(key: Buffer): KeyRange[] {
  const below = Buffer.concat([key, SLASH]);
  const whole: KeyRange = key.equals(SLASH) ? { key: SLASH, rangeEnd: prefixEnd(SLASH) } : { key: below, rangeEnd: prefixEnd(below) };
  const ranges: KeyRange[] = [];
  // Cut the checkpoint range out where it falls inside (a mirror of / into /).
  if (whole.key.compare(REPLICATION.rangeEnd) < 0 && whole.rangeEnd.compare(REPLICATION.key) > 0) {
    if (whole.key.compare(REPLICATION.key) < 0) ranges.push({ key: whole.key, rangeEnd: REPLICATION.key });
    if (whole.rangeEnd.compare(REPLICATION.rangeEnd) > 0) ranges.push({ key: REPLICATION.rangeEnd, rangeEnd: whole.rangeEnd });
  } else ranges.push(whole);
  return ranges;
}

export class V3Destination {
  #maxOps: number;
  /** --ha: the compare every Txn carries (the lock is still ours); null without --ha. */
  fence: (() => Compare[]) | null = null;
  /** The switchover fence of the subtree written: every Txn requires it absent. */
  readonly fenceKey: Buffer;

  constructor(
    readonly client: V3Client,
    private readonly keys: ByteKeyMap,
    maxTxnOps: number,
    /** Our writes' revisions, to tell them from foreign changes on the destination watch. */
    private readonly own?: OwnWrites,
  ) {
    this.#maxOps = maxTxnOps;
    this.fenceKey = Buffer.from(fenceKey(keys.dstRoot.toString('utf8')));
  }

  /** Operations one Txn may carry (--dst-max-txn-ops, lowered when the destination says it is less). */
  get maxOps(): number {
    return this.#maxOps;
  }

  async readCheckpoint(): Promise<number | null> {
    const { kvs } = await this.client.range(this.keys.checkpointKey);
    const raw = kvs[0]?.value.toString('utf8').trim();
    if (raw === undefined) return null;
    if (!/^\d+$/.test(raw)) throw new BadCheckpointError(`the replication index at ${this.keys.checkpointKey.toString()} is not a decimal number`);
    return Number(raw);
  }

  async writeCheckpoint(revision: number): Promise<void> {
    await this.client.put(this.keys.checkpointKey, Buffer.from(String(revision)));
  }

  /** The keys this mirror owns on the destination, by keyId. */
  async readTree(): Promise<Map<string, DestinationEntry & { key: Buffer }>> {
    const { kvs } = await this.client.rangeAll(this.keys.dstRange.key, this.keys.dstRange.rangeEnd);
    const tree = new Map<string, DestinationEntry & { key: Buffer }>();
    for (const kv of kvs) if (this.keys.ownsDst(kv.key)) tree.set(keyId(kv.key), { key: kv.key, value: kv.value, lease: kv.lease });
    return tree;
  }

  /** Keys that exist on the destination in [from, to] (inclusive), keys only. */
  async keysBetween(from: Buffer, to: Buffer): Promise<Buffer[]> {
    const { kvs } = await this.client.rangeAll(from, Buffer.concat([to, Buffer.from([0])]));
    return kvs.map((kv) => kv.key);
  }

  /**
   * One Txn: the writes, then (when given) the checkpoint. Throws TooManyOpsError after lowering maxOps when
   * the destination allows fewer operations than configured; the caller builds its batches again.
   */
  async commit(writes: DstWrite[], checkpoint: number | null): Promise<number> {
    const ops: TxnOp[] = writes.map((w) =>
      w.kind === 'put'
        ? { put: { key: w.key, value: w.value, ...(w.lease && w.lease !== '0' ? { lease: w.lease } : {}) } }
        : { deleteRange: { key: w.key, ...(w.rangeEnd ? { rangeEnd: w.rangeEnd } : {}) } },
    );
    if (checkpoint !== null) ops.push({ put: { key: this.keys.checkpointKey, value: Buffer.from(String(checkpoint)) } });
    if (ops.length === 0) return 0;
    const seq = this.own?.begin();
    let revision: number | undefined;
    try {
      const compare: Compare[] = [{ key: this.fenceKey, target: 'create', result: 'equal', value: 0 }, ...(this.fence?.() ?? [])];
      const res = await this.client.txn({ compare, success: ops, failure: [] });
      if (!res.succeeded) {
        const fenced = (await this.client.range(this.fenceKey)).kvs[0];
        if (fenced) throw new SwitchoverFencedError(describeFence(fenced.value.toString('utf8')));
        throw new FencedError('a destination write was refused: this instance no longer holds the HA lock');
      }
      revision = res.revision;
      return revision;
    } catch (err) {
      if (err instanceof TooManyOpsError && ops.length > 1) this.#maxOps = Math.max(2, Math.min(this.#maxOps, ops.length) >> 1);
      throw err;
    } finally {
      if (seq !== undefined) this.own!.end(seq, revision);
    }
  }
}
