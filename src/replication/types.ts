// The seams between the replication pipeline and the etcd APIs. A source (v2 or v3) turns its watch into
// normalised changes, one per source revision/index, in order; a destination applies batches of them together
// with the checkpoint. Keys and values are bytes: what the source holds is what the destination gets.

/** How long a copy may live without the source saying its original still does. */
export interface LeaseRef {
  /** Source identity of the lease: a v3 lease id (decimal), or `v2:<modifiedIndex>:<key>` for a v2 TTL key
   * (`v2:0:<key>` for a copy adopted after a restart, whose source index is not known). */
  id: string;
  /** Seconds the source lease was granted with, at least 1 (its copy gets copyTtl of this: copy-ttl.ts). */
  grantedTtl: number;
}

/** One operation of a change, on a source key (the pipeline maps it to the destination). */
export type ChangeOp =
  | { kind: 'put'; key: Buffer; value: Buffer; lease?: LeaseRef }
  | { kind: 'delete'; key: Buffer }
  /** v2 recursive delete or directory expiry: the key and everything below it (`key/...`). */
  | { kind: 'deleteTree'; key: Buffer };

/** Everything one source revision (v3) or index (v2) did inside the mirrored prefix: applied atomically. */
export interface Change {
  revision: number;
  ops: ChangeOp[];
}

export type SourceMessage =
  | { kind: 'change'; change: Change }
  /** Nothing in the prefix changed up to `revision` (a proof of progress): the checkpoint may move there. */
  | { kind: 'progress'; revision: number };

export interface SnapshotEntry {
  key: Buffer;
  value: Buffer;
  lease?: LeaseRef;
}

/** The mirrored prefix as it was at one source revision. */
export interface SourceSnapshot {
  revision: number;
  entries: SnapshotEntry[];
}

/** A source key as it was at a revision, for healing one destination key. */
export type KeyState =
  | { entry: SnapshotEntry | null }
  /** The source cannot say yet (v2 reads only the present): ask again once the destination is at `revision`. */
  | { retryAt: number }
  /** A change of this key after that revision is on its way through the pipeline: it rewrites the key anyway. */
  | { superseded: true };

export interface Source {
  readonly api: 'v2' | 'v3';
  /** Where the source is (origins only, never credentials). */
  readonly origin: string;
  /** Current source revision/index (one cheap request). */
  currentRevision(signal?: AbortSignal): Promise<number>;
  /** A consistent snapshot of the prefix. */
  snapshot(signal?: AbortSignal): Promise<SourceSnapshot>;
  /**
   * Changes after `from` (exclusive), in order, each whole, interleaved with proofs of progress. Ends when
   * `signal` aborts; throws an error with `historyLost: true` when the source no longer has the history from
   * `from` on, and retryable errors for outages it could not ride out.
   */
  changes(from: number, signal: AbortSignal): AsyncIterable<SourceMessage>;
  /** The key as it was at `revision` (absent: null). */
  keyAt(key: Buffer, revision: number, signal?: AbortSignal): Promise<KeyState>;
  /** The highest checkpoint that may be stored once everything up to `applied` is on the destination (lower
   * while a proof of progress below it is not yet confirmed; -Infinity: none yet). */
  storable(applied: number): number;
  /** Seconds a source lease has left: ≥ 0 while it lives (0 in its last second), < 0 once it is gone.
   * Keepalives produce no watch event: this is how the mirror learns that a lease it copied is still alive. */
  leaseRemaining(lease: LeaseRef, signal?: AbortSignal): Promise<number>;
  close(): Promise<void>;
}

export interface DestinationEntry {
  value: Buffer;
  /** The destination lease the key is attached to ('0' or absent: none). */
  lease?: string;
}
