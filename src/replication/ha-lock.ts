// The HA lock, on the destination cluster next to the checkpoint. On v3 (V3Lock): a lease-backed key next to the checkpoint, taken Campaign-style (a Txn that
// creates it only if its create revision is 0). While an instance holds it, every Txn it writes carries the compare
// `CreateRevision(lock) == mine` (fence()), so a deposed instance — paused past its TTL, or cut off — cannot write
// one byte once another has taken over: etcd refuses the whole Txn. The lock lives in the cluster being written
// because a compare sees only keys of the same cluster.
import type { EtcdClient } from '../etcd/v2/client.js';
import { CompareFailedError, KeyNotFoundError, NodeExistError } from '../etcd/errors.js';
import type { Compare, V3Client } from '../etcd/v3/client.js';

/** What the HA controller needs of a lock, whatever the destination's API. */
export interface HaLock {
  readonly instanceId: string;
  readonly held: boolean;
  tryAcquire(): Promise<boolean>;
  renew(): Promise<boolean>;
  release(): Promise<void>;
  state(): Promise<LockState>;
  /** Resolves once the lock created at `createRevision` is gone (released or expired). */
  released(createRevision: number, signal: AbortSignal): Promise<void>;
  abandon(): void;
}

export interface LockState {
  /** Instance id of the holder (null: nobody holds it). */
  holder: string | null;
  /** Revision the holder created the lock key at. */
  createRevision: number;
}

export class V3Lock implements HaLock {
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

  async released(createRevision: number, signal: AbortSignal): Promise<void> {
    const watch = this.client.watch(this.key, undefined, { startRevision: createRevision + 1, progressNotify: false });
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

/** How often a v2 standby looks whether the lock is gone (v2 has no cheap watch that survives a long wait). */
const V2_RELEASE_POLL_MS = 200;

/**
 * The HA lock on a v2 destination: a TTL key created with prevExist=false and renewed with refresh=true and
 * prevValue=<instance id> (compare-and-swap). v2 has no multi-key transactions, so it cannot fence data writes in
 * the same request: the checkpoint writes are fenced instead (a compare-and-swap on the checkpoint's prevIndex from
 * this instance's own last write, see V2Fence), and data writes only go out while the lock is renewed in time.
 */
export class V2Lock implements HaLock {
  #held = false;

  constructor(
    private readonly client: EtcdClient,
    readonly key: string,
    readonly instanceId: string,
    private readonly ttlSeconds: number,
  ) {}

  get held(): boolean {
    return this.#held;
  }

  async tryAcquire(): Promise<boolean> {
    try {
      await this.client.put(this.key, { value: this.instanceId, ttl: this.ttlSeconds, prevExist: false });
      this.#held = true;
    } catch (err) {
      if (!(err instanceof NodeExistError)) throw err;
    }
    return this.#held;
  }

  async renew(): Promise<boolean> {
    if (!this.#held) return false;
    try {
      await this.client.put(this.key, { ttl: this.ttlSeconds, refresh: true, prevExist: true, prevValue: this.instanceId });
      return true;
    } catch (err) {
      if (!(err instanceof CompareFailedError || err instanceof KeyNotFoundError)) throw err;
      this.abandon();
      return false;
    }
  }

  async release(): Promise<void> {
    if (!this.#held) return;
    this.abandon();
    try {
      await this.client.delete(this.key, { prevValue: this.instanceId });
    } catch (err) {
      if (!(err instanceof CompareFailedError || err instanceof KeyNotFoundError)) throw err;
    }
  }

  async state(): Promise<LockState> {
    try {
      const node = (await this.client.get(this.key, { quorum: true })).body.node;
      return { holder: node.value ?? null, createRevision: node.createdIndex };
    } catch (err) {
      if (err instanceof KeyNotFoundError) return { holder: null, createRevision: 0 };
      throw err;
    }
  }

  async released(createRevision: number, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if ((await this.state()).createRevision !== createRevision) return;
      await new Promise((r) => setTimeout(r, V2_RELEASE_POLL_MS));
    }
  }

  abandon(): void {
    this.#held = false;
  }
}

/**
 * Fencing of a v2 destination's checkpoint: each write is a compare-and-swap on the modifiedIndex of this
 * instance's own previous write (read when it became active), never prevIndex=0, which etcd treats as no condition.
 */
export class V2Fence {
  /** modifiedIndex of the checkpoint as this instance last wrote or read it; null: the key did not exist. */
  prevIndex: number | null = null;

  constructor(
    /** Whether data writes may go out: the lock is held and renewed within its deadline. */
    readonly mayWrite: () => boolean,
  ) {}
}
