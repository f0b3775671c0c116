// What the daemon gives the lifecycle machine, for either destination kind: v2-backend.ts and v3-backend.ts build
// it. The daemon imports the one it needs when it starts: a v2 → v2 mirror never loads gRPC and the protos, a
// v3 → v3 mirror never loads the v2 engine.
import type { Log, HaGate, ReplicationMetrics, ReplicationOptions } from './ports.js';
import type { FenceWatch } from './fence.js';
import type { HaLock } from './ha-lock.js';
import type { Run, RunHost } from './run-host.js';
import type { OrderingPolicy } from './v2/ordering.js';
import type { SourceBudget } from './v2/source-budget.js';
import type { AuditEngine, AuditReader } from './audit.js';

export interface Backend<H extends HaGate> {
  host: Pick<RunHost<Run>, 'actor' | 'drain' | 'status' | 'lastPersisted'>;
  /** --ha: the controller of the lock on the destination. */
  ha: H | undefined;
  /** The switchover fence of the subtree this mirror writes (src/replication/fence.ts). */
  fence: FenceWatch;
  /** The stored replication index/revision, null when there is none. */
  loadIndex(): Promise<number | null>;
  /** The source's wall clock minus ours (v2 source only: its TTLs are absolute times on its clock). */
  clockOffsetMs(): number | null;
  /** The consistency audit's reads at one point and the engine's hooks (src/replication/audit.ts). */
  audit: { reader: AuditReader; engine: AuditEngine };
  close(): Promise<void>;
}

export interface BackendDeps<H extends HaGate> {
  config: ReplicationOptions;
  log: Log;
  metrics: ReplicationMetrics;
  /** --ordering, with the adaptive mode's state (v2 destination). */
  ordering: OrderingPolicy;
  /** An expensive v2 source's request budget. */
  budget?: SourceBudget | undefined;
  /** --ha: wraps the backend's lock in the daemon's controller (renewals, standing down, the machine's events). */
  haController(lock: HaLock): H;
}
