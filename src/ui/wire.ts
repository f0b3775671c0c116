// The JSON the daemon serves and the /ui page reads: /state (and each /events message) and /history. Types (and
// one list of names), with no DOM or Node types, so that the daemon (src/daemon/state-view.ts, history.ts) and the page
// check against the same declarations.

export interface TransitionJson {
  /** ISO time of the transition. */
  at: string;
  from: string;
  to: string;
  reason: string;
}

export interface StateJson {
  /** Leaf state name: 'tailing' for running.tailing. */
  state: string;
  /** Path in the statechart ('running.tailing'): the /ui page highlights the node with this id. */
  statePath: string;
  reason: string;
  mode: string;
  attempt: number;
  ready: boolean;
  readyReason: string;
  sourceIndex: number | null;
  appliedIndex: number | null;
  lagEvents: number | null;
  lagSeconds: number;
  /** null for a v3 source (no event window) or while the lag is unknown. */
  headroomEvents: number | null;
  historyWindowEvents: number | null;
  eventsPerSecond: number;
  queue: number;
  inFlight: number;
  reconcile: { done: number; total: number; active: boolean; keysPerSecond: number } | null;
  runner: string;
  poller: 'watching' | 'stopped';
  writer: { state: string; queue: number; inFlight: number };
  ordering: {
    mode: string;
    current: 'strict' | 'key';
    reordering: boolean;
    reorderingSeconds: number;
    /** v2 destination: events/s strict order carries at the current write latency (null: not measured yet). */
    ceilingPerSecond: number | null;
    /** Destination time per ordered write, ms. */
    writeMs: number | null;
    /** Mirrored events/s the source sends. */
    sourcePerSecond: number | null;
    /** The source is at 80 % of the ceiling or more (until it is back below 60 %). */
    nearCeiling: boolean;
  };
  confirmedIndex: number | null;
  lastFault: { code: string; message: string } | null;
  timeline: TransitionJson[];
  source: { url: string; api: 'v2' | 'v3'; prefix: string; clockOffsetMs: number | null };
  destination: { url: string; api: 'v2' | 'v3'; prefix: string; indexKey: string };
  position: 'index' | 'revision';
  role: 'active' | 'standby' | null;
  ha: { instanceId: string; role: 'active' | 'standby'; holder: string | null; heldForSeconds: number | null } | null;
  /** Which switchover fenced this direction (the instance writes nothing and stays idle); null while not fenced. */
  fenced: string | null;
  /** What authentication costs each side per request, and whether it is what holds the mirror back. */
  auth: { source: RequestCostJson; destination: RequestCostJson };
  /** A v2 source's request budget (null for a v3 source). */
  sourceBudget: SourceBudgetJson | null;
  /** The consistency audit (src/replication/audit.ts); null with --audit-interval 0. */
  audit: AuditJson | null;
  version: string;
  resources: Record<string, number>;
}

/** What authentication costs one side (src/daemon/request-cost.ts). */
export interface RequestCostJson {
  auth: 'none' | 'password' | 'certificate' | 'token';
  /** Median extra time an authenticated request takes, ms (null until measured). */
  costMs: number | null;
  /** What one connection gets at that cost, requests/s (null when the cost is negligible or unknown). */
  ceilingPerSecond: number | null;
  tokenExchangeMs: number | null;
  expensive: boolean;
  /** True while the lag grows and password auth is the likely reason. */
  limiting: boolean;
  measuredAt: string | null;
  /** The operator's sentence (null when there is nothing to say). */
  message: string | null;
}

/** A v2 source's request budget (src/replication/v2/source-budget.ts). */
export interface SourceBudgetJson {
  perSecond: number;
  /** The source is expensive and a budget is set: optional requests wait for slots now. */
  active: boolean;
  /** Quiet proofs are going ahead above the budget because the store moves too fast for it. */
  exceeded: boolean;
  storeIndexesPerSecond: number | null;
  message: string | null;
}

/** The last consistency audit and the next (null fields: none yet). */
export interface AuditJson {
  /** ISO time the last audit finished. */
  lastAt: string | null;
  /** The source index (v2) or revision (v3) the last audit compared at. */
  atIndex: number | null;
  keys: number | null;
  differing: number | null;
  repaired: number | null;
  durationMs: number | null;
  /** ISO time the next audit is due (null while one runs, or when off). */
  nextAt: string | null;
  running: boolean;
}

/** The numbers /history keeps, one value per sample (null: unknown then, or nothing to measure). */
export const SERIES = ['lagEvents', 'lagSeconds', 'headroomEvents', 'eventsPerSecond', 'writeP99Ms'] as const;
export type SeriesName = (typeof SERIES)[number];

/** A lifecycle state held from `from` until `to` (ms since the epoch; `to` null: still in it). */
export interface BandJson {
  state: string;
  from: number;
  to: number | null;
}

/**
 * GET /history: the last `spanMs` of samples, oldest first, in columns; and the states over that time.
 * GET /history?after=T: only what is new to one who holds the samples up to T (see History.toJSON).
 */
export interface HistoryJson {
  /** Server time of the answer, ms since the epoch: the right end of the time axis. */
  now: number;
  /** When this daemon started, ms since the epoch: a new value means a new history. */
  startedAt: number;
  spanMs: number;
  sampleEveryMs: number;
  /** Sample times, ms since the epoch. */
  t: number[];
  series: Record<SeriesName, (number | null)[]>;
  /** Every state held during the span, oldest first; the first may have begun before it. */
  bands: BandJson[];
}
