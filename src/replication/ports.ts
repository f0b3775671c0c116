// What the replication layer needs from the process around it, declared here so that it imports nothing from
// src/daemon, src/cli or src/ui: the daemon's pino logger, prom-client registry, Config and HA controller satisfy
// these structurally, and tests can pass anything of the same shape.
import type { Cluster } from '../etcd/endpoint.js';

/** Which etcd API a side speaks. */
export type Api = 'v2' | 'v3';

/** Destination write order: 'strict' (source order), 'adaptive' (strict unless the window is at risk), 'key'. */
export type Ordering = 'strict' | 'adaptive' | 'key';

/** The options replication reads; the command line's Config extends it. */
export interface ReplicationOptions {
  readonly src: Cluster;
  readonly dst: Cluster;
  readonly srcPrefix: string;
  readonly dstPrefix: string;
  readonly strip: boolean;
  readonly ignoreRegex: RegExp | undefined;
  readonly allowMassDelete: boolean;
  /** How much smaller than the replica a source snapshot may be (share of its keys) without --allow-mass-delete. */
  readonly massDeleteRatio: number;
  readonly writeConcurrency: number;
  /** How often the replication index is written while events flow, ms. */
  readonly checkpointMs: number;
  /** Longest a quiet watch waits before re-arming from its X-Etcd-Index, ms. */
  readonly quietRearmMs: number;
  /** false: the reference tool's synchronous loop (one long-poll, one write, one index write per event). */
  readonly pipeline: boolean;
  readonly ordering: Ordering;
  readonly srcApi: Api;
  readonly dstApi: Api;
  /** Operations one destination Txn may carry (v3 destination: etcd's --max-txn-ops). */
  readonly dstMaxTxnOps: number;
  /** --ha: compete for a lock on the destination; replicate only while holding it. */
  readonly ha: boolean;
  /** Who this instance is, in the lock and on /state. */
  readonly instanceId: string;
  /** Lock TTL, seconds. */
  readonly haTtl: number;
}

/** One log method: an object of fields and a message, or a message alone (pino's call shapes). */
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}

export interface Log {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

export interface Count {
  inc(value?: number): void;
}
export interface Level {
  set(value: number): void;
}
export interface Observed {
  observe(value: number): void;
}
export interface Timed extends Observed {
  /** Starts a timer; calling the result observes the seconds since. */
  startTimer(): () => void;
}
export interface Labelled<L extends string, M> {
  labels(labels: Record<L, string>): M;
}

/** The metrics replication updates (a subset of the daemon's registry, src/daemon/metrics.ts). */
export interface ReplicationMetrics {
  replicatedEvents: Count;
  writeLatency: Timed;
  eventWait: Observed;
  eventOverhead: Observed;
  loadTime: Observed;
  eventsApplied: Labelled<'action', Count>;
  eventsSkipped: Labelled<'reason', Count>;
  sourceIndex: Level;
  appliedIndex: Level;
  faults: Labelled<'code', Count>;
  healed: Labelled<'reason', Count>;
  watchPolls: Labelled<'outcome', Count>;
  indexWrites: Count;
  reconcileWritten: Count;
  reconcileDeleted: Count;
  reconcileDuration: Level;
  massDeleteRefused: Count;
  outOfWindow: Count;
  ttlRefreshes: Count;
  ttlKeysTracked: Level;
  lastApply: Level;
  reorderedWrites: Count;
  writeRetries: Count;
  rangeDeletes: Count;
  splitRevisions: Count;
  leasesTracked: Level;
  /** ms timestamp of the last successful apply (0: nothing applied yet). */
  lastApplyAt: number;
}

/** What a backend needs of the --ha controller: whether this instance may write now. */
export interface HaGate {
  mayWrite(): boolean;
}
