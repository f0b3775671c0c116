// Plain data shared by the lifecycle machine and the actors that src/ injects into it. JSON only: the
// snapshot is served as-is on /state and drawn by the visualizer.

/** What `running` does when it is (re)entered. `start` means: read the stored index first. */
export type Mode = 'start' | 'tail' | 'reload' | 'recover';

export interface FaultInfo {
  /** Stable error code (EM_ERR_...). */
  code: string;
  message: string;
  retryable: boolean;
  /** etcd errorCode when the fault is an etcd error body. */
  errorCode?: number;
  /** The answering cluster's store index, when known. */
  etcdIndex?: number;
  /** The source no longer has the history from the stored index on (v2: event index cleared; v3: compacted;
   * or a proof of progress was contradicted): only a snapshot resync helps. */
  historyLost?: boolean;
  /** A write was refused because this instance no longer holds the HA lock: it must stand by, not retry. */
  fenced?: boolean;
  /** A write was refused by a switchover's fence: the direction was reversed; this instance must stay idle. */
  switchover?: boolean;
}

export interface MirrorInput {
  /** --reload: reconcile the destination to a source snapshot before tailing. */
  reload: boolean;
  /** --ha: compete for the destination's lock; replicate only while holding it. */
  ha?: boolean;
}

export interface MirrorContext {
  mode: Mode;
  reload: boolean;
  ha: boolean;
  /** Highest source index whose events (and everything before) are applied on the destination. */
  appliedIndex: number | null;
  /** Latest source store index seen (X-Etcd-Index). */
  sourceIndex: number | null;
  /** Consecutive failed attempts; drives the backoff delay. */
  attempt: number;
  lastFault: FaultInfo | null;
  /** Why the machine is in its current state, for logs and the visualizer. */
  reason: string;
}

export type MirrorEvent =
  | { type: 'operator.start' }
  | { type: 'operator.stop'; reason?: string }
  | { type: 'runner.progress'; appliedIndex: number; sourceIndex: number | null }
  | { type: 'runner.reconciled'; etcdIndex: number }
  | { type: 'runner.fault'; fault: FaultInfo }
  /** --ha: the lock is no longer ours (a renewal failed or missed its deadline, or a write was fenced). */
  | { type: 'lock.lost'; reason: string }
  /** The destination carries a switchover's fence for this direction (seen by the fence poll). */
  | { type: 'switchover.fenced'; reason: string };

export interface CampaignOutput {
  /** The lock is ours now. */
  acquired: boolean;
  /** Who holds it otherwise. */
  holder: string | null;
}

export interface LoadIndexInput {
  reload: boolean;
}
export interface LoadIndexOutput {
  /** Stored replication index, or null when the key does not exist. */
  appliedIndex: number | null;
}

export interface RunnerInput {
  mode: 'tail' | 'reload' | 'recover';
  /** Where tailing resumes (exclusive); ignored by reload/recover, which start from a snapshot. */
  appliedIndex: number | null;
}

/** Commands the machine never sends today; the runner is controlled by starting and stopping it. */
export type RunnerCommand = { type: 'runner.noop' };
