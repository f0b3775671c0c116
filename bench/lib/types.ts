// The shape of bench/results/*.json.
import type { CompactSample } from './sampler.js';
import type { Summary } from './stats.js';

export type Mode = 'pipeline' | 'sync';

export const MODE_FLAGS: Record<Mode, string[]> = {
  pipeline: [],
  sync: ['--pipeline', 'off'],
};

export type Verdict = 'ok' | 'missing canaries' | 'out of window' | 'died' | 'did not catch up' | 'destination differs';

export interface StepResult {
  mode: Mode;
  rate: number;
  seconds: number;
  verdict: Verdict;
  /** Why the mirror was restarted (with --reload) before this step, if it was. */
  restartedBefore: string | null;
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
    dstWriteLatencyMs: { writes: number; p50AtMostMs: number | null; p99AtMostMs: number | null; over25msShare: number } | null;
  };
  cpuPercent: { mirror: number | null; srcEtcd: number | null; dstEtcd: number | null; bench: number | null; machineBusy: number | null };
  drain: {
    sourceIndexAtEnd: number | null;
    /** From the step's end until /state appliedIndex >= the source index after the last acknowledged write. */
    caughtUpMs: number | null;
    mismatchedKeys: number | null;
  };
  samples: CompactSample[];
}

export interface CatchupResult {
  mode: Mode;
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
  error: string | null;
}

export interface ReloadModeResult {
  mode: Mode;
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
  mode: Mode;
  mirrorArgs: string[];
  steps: StepResult[];
  catchup: CatchupResult | null;
  mirrorLog: string;
  mirrorProblemCount: number;
  mirrorProblems: unknown[];
  mirrorRestarts: number;
  watcherRestarts: number;
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
  reload: ReloadResult | null;
  targets: Record<string, unknown>;
  notes: string[];
}
