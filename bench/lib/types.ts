// The shape of bench/results/*.json.
import type { HistogramDelta } from './mirror.js';
import type { CompactSample } from './sampler.js';
import type { Summary } from './stats.js';

/**
 * adaptive: default flags (--ordering adaptive); strict: --ordering strict; key: --ordering key (per-key order
 * only, the default before --ordering existed); sync: --pipeline off (the reference tool's synchronous loop).
 */
export type Mode = 'adaptive' | 'strict' | 'key' | 'sync';

export const MODES: readonly Mode[] = ['adaptive', 'strict', 'key', 'sync'];

/** Mirror flags per mode (added to every mirror the bench starts in that mode). */
export const MODE_FLAGS: Record<Mode, string[]> = {
  adaptive: [],
  strict: ['--ordering', 'strict'],
  key: ['--ordering', 'key'],
  sync: ['--pipeline', 'off'],
};

/** Accepted on the command line for a mode: `pipeline` was the default mode's name before --ordering. */
export const MODE_ALIASES: Record<string, Mode> = { pipeline: 'adaptive' };

/** Default --modes of a run. */
export const DEFAULT_MODES: readonly Mode[] = ['adaptive', 'strict', 'sync'];

/** A sample interval counts as backlogged when the mirror was tailing with at least this many events to apply. */
export const BACKLOG_EVENTS = 300;

/** etcd v2 keeps the last 1000 events: a stored index this far behind the source can no longer be resumed from. */
export const HISTORY_WINDOW_EVENTS = 1000;

/**
 * 'past window': no out-of-window transition, but a /state sample showed a lag of >= HISTORY_WINDOW_EVENTS (window
 * headroom 0): the stream kept the mirror going, but a restart at that moment would have needed a reload.
 */
export type Verdict = 'ok' | 'missing canaries' | 'out of window' | 'past window' | 'died' | 'did not catch up' | 'destination differs';

export interface StepResult {
  /** A Mode; results files from before --ordering hold 'pipeline' (default flags then: per-key ordering). */
  mode: Mode | string;
  rate: number;
  /** With --ceiling-fractions: the step offered this fraction of the mode's ceiling (put/s plus canaries/s). */
  fraction?: number;
  /** Canaries written every this many ms (100 unless a fraction step: 500, so that they stay rare). */
  canaryEveryMs?: number;
  seconds: number;
  verdict: Verdict;
  /** Why the mirror was restarted (with --reload) before this step, if it was. */
  restartedBefore: string | null;
  /**
   * With --dst-commit-ms: a one-connection sequential writer to the destination (under /ceiling) during the step,
   * beside the mirror: strict order's ceiling under the same load.
   */
  dstCeiling?: DstCeiling | null;
  antagonist: {
    scheduled: number;
    sent: number;
    acked: number;
    notSent: number;
    errors: number;
    errorSamples: string[];
    /** acked / step seconds */
    achievedRate: number;
    ackLatencyMs: Summary;
    windDownMs: number;
    maxTickGapMs: number;
  };
  canary: {
    written: number;
    writeErrors: number;
    seen: number;
    /** Acknowledged by the source, not on the destination `drainSeconds` after the step's end. */
    missing: number;
    /** On the destination at the deadline, but the stream watch never reported it (a benchmark watch problem). */
    presentUnobserved: number;
    /** Destination arrival − source acknowledgement, ms. */
    delayMs: Summary;
    /** Destination arrival − send, ms. */
    delayFromSendMs: Summary;
  };
  mirror: {
    /** Transitions to outOfWindow (a 401, or a resynchronisation the mirror decided on). */
    outOfWindow: number;
    /** etcdmirror_out_of_window_total: source answered 401 (event index cleared). */
    errors401: number;
    faults: Record<string, number>;
    died: boolean;
    exitCode: number | null;
    statesSeen: string[];
    maxLagEvents: number | null;
    maxQueue: number | null;
    maxInFlight: number | null;
    /** % of one core, over the step. */
    cpuPercent: number | null;
    maxRssMb: number | null;
    eventsApplied: number | null;
    indexWrites: number | null;
    /** (index writes + events applied) / events applied. */
    dstWritesPerEvent: number | null;
    /** From the mirror's etcdmirror_write_latency histogram over the step (bucket upper bounds, ms). */
    dstWriteLatencyMs: HistogramDelta | null;
    /** etcdmirror_event_wait_seconds over the step: received → write sent, with the wait for the write before it
     * (same shape; `writes` counts events). */
    eventWaitMs: HistogramDelta | null;
    /** etcdmirror_event_overhead_seconds: of that wait, the mirror's own part (not waiting for the write before it). */
    eventOverheadMs?: HistogramDelta | null;
    /** The process's event-loop delay p99 at the step's end (ms; prom-client's monitorEventLoopDelay window). */
    eventLoopDelayP99Ms: number | null;
  };
  /** Reordering over the step and its drain (from the step's start until the bench stopped waiting for the mirror). */
  ordering?: {
    /** /state ordering.mode */
    mode: string | null;
    /** Delta of etcdmirror_reordering_seconds_total (the mirror adds to it every 500 ms). */
    reorderingSeconds: number | null;
    /** Delta of /state ordering.reorderingSeconds over the same window (exact to the ms). */
    reorderingSecondsState: number | null;
    /** Delta of etcdmirror_reordered_writes_total. */
    reorderedWrites: number | null;
    /** Delta of etcdmirror_reordering_episodes_total. */
    episodes: number | null;
    /** etcdmirror_reordering_active at the start and at the end of the window. */
    activeAtStart: boolean | null;
    activeAtEnd: boolean | null;
    /** Share of the 500 ms /state samples with ordering.reordering true. */
    activeSampleShare: number | null;
    /** Reordering at any time in the window (any of the above). */
    active: boolean | null;
  };
  /** Destination throughput during the step proper (from the step's start to its end, not the drain). */
  throughput?: {
    /** Seconds between the readings at the step's start and end. */
    seconds: number;
    /** Delta of etcdmirror_events_applied_total between the readings. */
    eventsApplied: number | null;
    eventsAppliedPerSecond: number | null;
    /** Growth of the destination's X-Etcd-Index between the readings: every destination write (events, index writes, reconcile writes). */
    dstIndexGrowth: number | null;
    dstWritesPerSecond: number | null;
    /**
     * Growth of /state appliedIndex per second over the 500 ms sample intervals in which the mirror was tailing
     * with >= BACKLOG_EVENTS events to apply at the interval's start (so its writer never ran out of work):
     * the mirror's replay rate while it is behind. Null with less than 1 s of such intervals. Measured during
     * the step (the antagonist writing) ...
     */
    backloggedEventsPerSecond: number | null;
    backloggedSeconds: number;
    /**
     * ... and after it, in the drain (antagonist and canaries stopped): the backlog at the step's end (source index
     * after the last acknowledged write − /state appliedIndex at the step's end) ÷ the time from the step's end until
     * appliedIndex reached that source index. Null unless the backlog was >= BACKLOG_EVENTS, the mirror caught up,
     * and every /state sample of the drain was 'tailing' (no recovery in between).
     */
    drainBacklogEvents?: number | null;
    drainReplayMs?: number | null;
    drainReplayEventsPerSecond?: number | null;
  };
  /**
   * % of one core per process; machineBusy in % of the whole machine; other: machineBusy minus the bench's own
   * processes (mirror, both etcds, the bench with its worker threads) — what other work on the machine took, in % of the machine.
   */
  cpuPercent: { mirror: number | null; srcEtcd: number | null; dstEtcd: number | null; bench: number | null; machineBusy: number | null; other?: number | null };
  drain: {
    sourceIndexAtEnd: number | null;
    /** From the step's end until /state appliedIndex >= the source index after the last acknowledged write. */
    caughtUpMs: number | null;
    mismatchedKeys: number | null;
  };
  samples: CompactSample[];
}

export interface CatchupResult {
  mode: Mode | string;
  events: number;
  writeSeconds: number;
  sourceIndex: number;
  stopExitCode: number | null;
  /** spawn → /state appliedIndex >= sourceIndex */
  totalMs: number | null;
  /** 'tailing the source' log line → done */
  fromTailingMs: number | null;
  eventsPerSecond: number | null;
  maxRssMb: number | null;
  finalState: string | null;
  statesSeen: string[];
  outOfWindow: number;
  faults: Record<string, number>;
  /** Growth of the destination's X-Etcd-Index from spawn until done (every destination write). */
  dstIndexGrowth?: number | null;
  /** /state ordering.reorderingSeconds when done (the process is new: all of it is this catch-up's). */
  reorderingSeconds?: number | null;
  /** etcdmirror_reordered_writes_total when done. */
  reorderedWrites?: number | null;
  error: string | null;
}

/** One-connection sequential writes to a fresh etcd started like the bench's destination etcds. */
export interface WriteBaseline {
  /** 'start' (before the modes) or 'end' (after the modes, before the reload run). */
  when: string;
  at: string;
  seconds: number;
  writes: number;
  failed: number;
  writesPerSecond: number;
  /** Answer latency, ms. */
  latencyMs: Summary;
  /** Over the timed writes: the etcd's CPU (% of one core), the bench's, and the whole machine's busy % (of all cores). */
  cpuPercent?: { etcd: number | null; bench: number | null; machineBusy: number | null; other?: number | null };
}

/** Strict mode's destination write rate against the baseline. */
export interface StrictCeiling {
  baselineWritesPerSecond: number | null;
  /**
   * Best drain replay rate of a strict step (events/s: the backlog left at the step's end, replayed after the
   * antagonist stopped; see StepResult.throughput.drainReplayEventsPerSecond), and which step.
   */
  drain: { rate: number; eventsPerSecond: number; backlogEvents: number; replayMs: number; ratio: number | null } | null;
  /** Best backlogged replay rate during a strict step (the antagonist still writing), and which step. */
  step: { rate: number; eventsPerSecond: number; backloggedSeconds: number; dstWritesPerSecond: number | null; ratio: number | null } | null;
  /** Strict catch-up run: events / ms after 'tailing the source'. */
  catchup: { events: number; eventsPerSecond: number; ratio: number | null } | null;
}

export interface ReloadModeResult {
  mode: Mode | string;
  keys: number;
  /** `seconds` of the 'destination reconciled to the source snapshot' log line (snapshot + reconcile). */
  seconds: number | null;
  keysPerSecond: number | null;
  written: number | null;
  /** spawn → state tailing */
  wallMs: number | null;
  destinationKeys: number | null;
  maxRssMb: number | null;
  cpuPercent: number | null;
  error: string | null;
}

export interface ReloadResult {
  keys: number;
  fill: { seconds: number; keysPerSecond: number; failed: number; concurrency: number };
  modes: ReloadModeResult[];
  baseline: {
    keysWritten: number;
    seconds: number;
    keysPerSecond: number;
    failed: number;
    /** Seconds for all `keys`, extrapolated when fewer were written. */
    secondsForAllKeys: number;
    extrapolated: boolean;
  } | null;
  /** reload keys/s ÷ baseline keys/s, per mode */
  speedup: Record<string, number | null>;
}

export interface ModeResult {
  mode: Mode | string;
  mirrorArgs: string[];
  steps: StepResult[];
  catchup: CatchupResult | null;
  mirrorLog: string;
  mirrorProblemCount: number;
  mirrorProblems: unknown[];
  mirrorRestarts: number;
  watcherRestarts: number;
  /** Steps not run in this mode (--sync-max-rate). */
  skippedRates?: number[];
  /**
   * With --ceiling-fractions: the mode's ceiling, its highest backlogged apply rate over the --rates steps (events/s
   * while a backlog waited at least 1 s), and the step it came from. Null when no step backlogged it.
   */
  ceiling?: { eventsPerSecond: number; fromRate: number } | null;
  error: string | null;
}

export interface BenchResults {
  version: 1;
  startedAt: string;
  finishedAt: string;
  command: string;
  options: Record<string, unknown>;
  machine: Record<string, unknown>;
  build: Record<string, unknown>;
  modes: ModeResult[];
  /** Absent in results files from before the write baseline existed. */
  writeBaseline?: WriteBaseline[];
  strictCeiling?: StrictCeiling | null;
  /** The destination's kind (--dst-commit-ms, --dst-disk) and its quiet one-at-a-time write rate; absent before they existed. */
  destination?: { commitMs: number | null; disk: boolean; description: string; quiet: DstCeiling | null };
  reload: ReloadResult | null;
  targets: Record<string, unknown>;
  notes: string[];
}

/** A one-connection sequential writer's result (bench/lib/dst-cluster.ts sequentialV2). */
export interface DstCeiling {
  writes: number;
  failed: number;
  seconds: number;
  writesPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
}
