// The seams between the replication pipeline and the etcd APIs. A source (v2 or v3) turns its watch into
// normalised changes, one per source revision/index, in order; a destination applies them, in the order and with
// the concurrency it chooses, and stores the checkpoint (inside its Txns, or as a write of its own). Keys and
// values are bytes: what the source holds is what the destination gets.

import type { EtcdEvent, EtcdNode } from '../etcd/v2/decode.js';

/** How long a copy may live without the source saying its original still does. */
export interface LeaseRef {
  /** Source identity of the lease: a v3 lease id (decimal), or `v2:<modifiedIndex>:<key>` for a v2 TTL key
   * (`v2:0:<key>` for a copy adopted after a restart, whose source index is not known). */
  id: string;
  /** Seconds the source lease was granted with, at least 1 (its copy gets copyTtl of this: copy-ttl.ts). */
  grantedTtl: number;
}

/** One operation of a change, on a source key (the destination maps it to its own keys). */
export type ChangeOp =
  | { kind: 'put'; key: Buffer; value: Buffer; lease?: LeaseRef }
  | { kind: 'delete'; key: Buffer }
  /** v2 recursive delete or directory expiry: the key and everything below it (`key/...`). Above the prefix
   * (a v2 delete of an ancestor), it is the prefix itself. */
  | { kind: 'deleteTree'; key: Buffer };

/** Everything one source revision (v3) or index (v2) did inside the mirrored prefix: applied atomically. */
export interface Change {
  revision: number;
  ops: ChangeOp[];
  /** v2 source: the event as read. A v2 destination replays it as such (directories, TTLs, the value before it
   * for the replay guard); a v3 destination uses `ops`. */
  event?: EtcdEvent;
  /** v2 source: nothing to write, and why (the key is outside the prefix, hidden, ignored, or the action unknown). */
  skipped?: 'outside' | 'hidden' | 'ignored' | 'unknown';
  /** performance.now() when the source's answer carrying it reached the mirror: where an event's wait inside the
   * mirror starts (etcdmirror_event_wait_seconds, etcdmirror_event_overhead_seconds). */
  receivedAt?: number;
}

export type SourceMessage =
  | { kind: 'change'; change: Change }
  /** Nothing in the prefix changed up to `revision` (a proof of progress): the checkpoint may move there, as far
   * as storable() allows (a v2 quiet claim counts once confirmed; its confirmation comes as another proof). */
  | { kind: 'progress'; revision: number }
  /** The live stream starts after `revision`: what came before it was history (after a restart, a replay). */
  | { kind: 'live'; revision: number }
  /** changes('now'): the reader is registered at `revision`; a snapshot read from now on covers what it skips. */
  | { kind: 'registered'; revision: number };

export interface SnapshotEntry {
  key: Buffer;
  value: Buffer;
  lease?: LeaseRef;
}

/** The mirrored prefix as it was at one source revision. */
export interface SourceSnapshot {
  revision: number;
  entries: SnapshotEntry[];
  /** A v2 source's tree as read (directories, TTLs), for a v2 destination. */
  v2Tree?: EtcdNode | null;
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
  /** Its history is a short window (v2: 1,000 events): a reload registers the live reader before it reads the
   * snapshot, so a long reconcile cannot make it ask for a cleared index. */
  readonly liveBeforeSnapshot: boolean;
  /** Current source revision/index (one cheap request). */
  currentRevision(signal?: AbortSignal): Promise<number>;
  /** A consistent snapshot of the prefix. */
  snapshot(signal?: AbortSignal): Promise<SourceSnapshot>;
  /**
   * Changes after `from` (exclusive), in order, each whole, interleaved with proofs of progress. Ends when
   * `signal` aborts; throws an error with `historyLost: true` when the source no longer has the history from
   * `from` on, and retryable errors for outages it could not ride out. 'now' (liveBeforeSnapshot only): from
   * where the reader registers, said first in a `registered` message.
   */
  changes(from: number | 'now', signal: AbortSignal): AsyncIterable<SourceMessage>;
  /** The key as it was at `revision` (absent: null). */
  keyAt(key: Buffer, revision: number, signal?: AbortSignal): Promise<KeyState>;
  /** The highest checkpoint that may be stored once everything up to `applied` is on the destination (lower
   * while a proof of progress below it is not yet confirmed; -Infinity: none yet). */
  storable(applied: number): number;
  /** Seconds a source lease has left: ≥ 0 while it lives (0 in its last second), < 0 once it is gone.
   * Keepalives produce no watch event: this is how the mirror learns that a lease it copied is still alive. */
  leaseRemaining(lease: LeaseRef, signal?: AbortSignal): Promise<number>;
  /** Up to where every proof of progress is confirmed (status only; null: the source makes no claims). */
  confirmedUpTo(): number | null;
  close(): Promise<void>;
}

export interface DestinationEntry {
  value: Buffer;
  /** The destination lease the key is attached to ('0' or absent: none). */
  lease?: string;
}

/** What a destination's writer tells the run about its progress. */
export interface WriterHooks {
  /** Every change and proof pushed up to `revision` is on the destination. */
  applied(revision: number): void;
  /** A write failed for good: the writer has stopped starting work, the run ends with this fault. */
  failed(err: unknown): void;
  /** Checkpoint in the Txn ('txn' style): the checkpoint to carry with the writes up to `upTo` (null: none), and
   * how long a Txn that would carry nothing but it is to wait (the checkpoint moves at most every --checkpoint-ms). */
  checkpointFor(upTo: number): { checkpoint: number | null; waitMs: number };
  /** 'txn' style: a Txn stored this checkpoint. */
  persisted(revision: number): void;
}

/** What a run's destination shows on /state. */
export interface WriterStatus {
  queue: number;
  inFlight: number;
  oldestUnappliedAt: number | null;
  ordering: 'strict' | 'key';
  /** v2: the ordered lane's writes answered and busy time (the ordered ceiling). */
  lane?: { answered: number; busyMs: number } | null;
  /** v2: mirrored source events received this run (written or to be written). */
  received?: number;
}

/** A foreign-changed or audited destination key to restore to the source; `retryAt`: not before the destination
 * is at that revision. */
export interface HealItem {
  id: string;
  key: Buffer;
  retryAt: number;
  audit?: boolean;
}

/** Per heal item: the keys it wrote (done), or the revision to try again at. */
export type HealOutcome = Map<string, { written: number } | { retryAt: number }>;

/** One run of a destination: the writer the pipeline hands changes to, in source order, and the run's upkeep. */
export interface DestinationRun {
  /** After a restart, before tailing: what the destination must pick up again (lease copies, TTL keys). */
  resume(): Promise<void>;
  /** Makes the destination equal to a snapshot, through the mass-delete guard ('txn' style: the last Txn stores
   * the snapshot's revision as the checkpoint). */
  reconcile(snapshot: SourceSnapshot, onProgress: (done: number, total: number) => void): Promise<{ written: number; deleted: number; unchanged?: number }>;
  /** Starts writing after `from`: changes and proofs arrive through push(), in source order. */
  start(from: number, hooks: WriterHooks): void;
  push(msg: SourceMessage): void;
  /** Resolves when fewer than `n` pushed items wait (backpressure for the reader), or the writer halted. */
  waitForRoom(n: number): Promise<void>;
  /** Runs `run` between writes (heals, the audit's checkpoint): nothing of the run's writes in flight meanwhile. */
  barrier<T>(run: () => Promise<T>): Promise<T>;
  /** Resolves when nothing is in flight and nothing waits (or the writer halted). */
  idle(): Promise<void>;
  /** Stop starting writes; those in flight finish. */
  halt(): void;
  /** Restores keys someone else changed (or an audit found differing) to the source's state, at `at`. Runs in a
   * barrier. */
  heal(items: HealItem[], at: number): Promise<HealOutcome>;
  /** Stores the checkpoint alone (v2: a compare-and-swap under --ha). */
  writeCheckpoint(revision: number, signal?: AbortSignal): Promise<void>;
  /** The stored checkpoint moved (adaptive ordering follows the stored index's headroom). */
  stored?(revision: number): void;
  status(): WriterStatus;
  /** Stops the upkeep (watch, TTL or lease keeping) and lets every write started settle. */
  close(): Promise<void>;
}

export interface RunContext {
  mode: 'tail' | 'reload' | 'recover';
  source: Source;
  signal: AbortSignal;
  /** The destination's watch found keys someone else changed. */
  foreign(keys: Buffer[]): void;
  /** The checkpoint stored last (null: none this run yet). */
  stored(): number | null;
}

/** A replication destination (v2 or v3): it chooses how to write (v3: Txn batches carrying the checkpoint; v2:
 * one ordered lane, or lanes by key, with the checkpoint written on its own). */
export interface Destination {
  /** 'txn': the checkpoint travels inside the Txn of the writes it covers; 'separate': it is a write of its own,
   * at most every --checkpoint-ms (sooner when it trails), after the writes it covers. */
  readonly checkpointStyle: 'txn' | 'separate';
  readCheckpoint(): Promise<number | null>;
  open(ctx: RunContext): DestinationRun;
  /** Between runs (and on a standby): no lease or TTL keeping. */
  pause?(): void;
}
