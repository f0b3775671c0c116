// The HA lock on a v3 destination: a lease-backed key next to the checkpoint, taken Campaign-style (a Txn that
// creates it only if its create revision is 0). While an instance holds it, every Txn it writes carries the compare
// `CreateRevision(lock) == mine` (fence()), so a deposed instance — paused past its TTL, or cut off — cannot write
// one byte once another has taken over: etcd refuses the whole Txn. The lock lives in the cluster being written
// because a compare sees only keys of the same cluster.
import type { Compare, V3Client } from '../etcd/v3/client.js';

export interface LockState {
  /** Instance id of the holder (null: nobody holds it). */
  holder: string | null;
  /** Revision the holder created the lock key at. */
  createRevision: number;
}

export class V3Lock {
  #lease: string | null = null;
  #createRevision = 0;
  /** What fence() compares with: the last revision this instance held the lock at, kept after losing it (never 0,
   * which would match a free lock). */
  #fenceRevision = -1;

  constructor(
    private readonly client: V3Client,
    readonly key: Buffer,
    readonly instanceId: string,
    private readonly ttlSeconds: number,
  ) {}

  get held(): boolean {
    return this.#createRevision > 0;
  }

  /** Takes the lock if nobody holds it; true when it is ours. */
  async tryAcquire(): Promise<boolean> {
    const { id: lease } = await this.client.leaseGrant(this.ttlSeconds);
    const res = await this.client.txn({
      compare: [{ key: this.key, target: 'create', result: 'equal', value: 0 }],
      success: [{ put: { key: this.key, value: Buffer.from(this.instanceId), lease } }],
      failure: [],
    });
    if (!res.succeeded) {
      await this.client.leaseRevoke(lease).catch(() => {});
      return false;
    }
    this.#lease = lease;
    this.#createRevision = this.#fenceRevision = res.revision;
    return true;
  }

  /** The compare every write of the holder carries. */
  fence(): Compare[] {
    return [{ key: this.key, target: 'create', result: 'equal', value: this.#fenceRevision }];
  }

  /** Keeps the lease alive; false when the lock is no longer ours (expired, or taken over). */
  async renew(): Promise<boolean> {
    if (!this.#lease) return false;
    const ttl = await this.client.leaseKeepAliveOnce(this.#lease);
    const still = ttl > 0 && (await this.state()).createRevision === this.#createRevision;
    if (!still) this.abandon();
    return still;
  }

  /** Deletes the lock if it is still ours (a compare on its create revision), then drops the lease. */
  async release(): Promise<void> {
    if (!this.#lease) return;
    const lease = this.#lease;
    await this.client.txn({ compare: this.fence(), success: [{ deleteRange: { key: this.key } }], failure: [] });
    this.abandon();
    await this.client.leaseRevoke(lease).catch(() => {});
  }

  async state(): Promise<LockState> {
    const kv = (await this.client.range(this.key)).kvs[0];
    return kv ? { holder: kv.value.toString('utf8'), createRevision: kv.createRevision } : { holder: null, createRevision: 0 };
  }

  /** Resolves when the lock key is deleted (released or expired) after `fromRevision`, or when `signal` aborts. */
  async released(fromRevision: number, signal: AbortSignal): Promise<void> {
    const watch = this.client.watch(this.key, undefined, { startRevision: fromRevision, progressNotify: false });
    const stop = () => watch.close();
    signal.addEventListener('abort', stop, { once: true });
    try {
      for await (const msg of watch) if (msg.kind === 'events' && msg.events.some((e) => e.type === 'delete')) return;
    } finally {
      signal.removeEventListener('abort', stop);
      watch.close();
    }
  }

  /** Stops counting the lock as ours (its writes stay fenced by the old revision, which can never match again). */
  abandon(): void {
    this.#lease = null;
    this.#createRevision = 0;
  }
}
