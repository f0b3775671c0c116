// What the machine's `running` state invokes, for either destination kind: one run at a time. A new run starts
// only after the previous one's writes have all settled, so order is never broken across restarts; the stored
// checkpoint is handed from run to run.
import { fromCallback } from 'xstate';
import type { MirrorEvent, RunnerCommand, RunnerInput } from '../../machines/types.js';
import type { Log, ReplicationMetrics } from './ports.js';

export interface RunnerStatus {
  mode: RunnerInput['mode'];
  phase: 'snapshot' | 'reconcile' | 'tail' | 'stopping' | 'stopped';
  queue: number;
  inFlight: number;
  appliedIndex: number | null;
  persistedIndex: number | null;
  sourceIndex: number | null;
  reconcile: { done: number; total: number } | null;
  oldestUnappliedAt: number | null;
  /** Highest index up to which every quiet claim is confirmed: the stored index never passes it. */
  confirmedIndex: number | null;
  ordering: 'strict' | 'key';
  /** v2 destination: its ordered lane's writes answered and busy time so far (the ordered ceiling). */
  lane?: { answered: number; busyMs: number } | null;
  /** v2 destination: mirrored source events received this run (written or to be written). */
  received?: number;
}

export interface Run {
  /** Settles when the run's loops and every write they started have finished. */
  readonly settled: Promise<void>;
  /** Stop reading, let writes in flight land, store the checkpoint; resolves within about `deadlineMs`. */
  stop(deadlineMs: number): Promise<void>;
  status(): RunnerStatus;
}

/** Longest wait for a stopped run's work to settle before the next one starts. */
const SETTLE_LIMIT_MS = 30_000;

export abstract class RunHost<R extends Run> {
  #current: R | null = null;
  #previous: Promise<void> = Promise.resolve();
  #lastPersisted: number | null = null;

  constructor(private readonly host: { log: Log; metrics: Pick<ReplicationMetrics, 'faults'> }) {}

  /** A new run; `resumeFrom` is what the previous runs stored, `onPersisted` is told of each checkpoint. */
  protected abstract create(input: RunnerInput, resumeFrom: number | null, report: (e: MirrorEvent) => void, onPersisted: (checkpoint: number) => void): R;

  /** After a run has stopped, before the next one may start. */
  protected stopped(_run: R): void {}

  /** The run in progress (null between runs). */
  protected get current(): R | null {
    return this.#current;
  }

  get lastPersisted(): number | null {
    return this.#lastPersisted;
  }

  status(): RunnerStatus | null {
    return this.#current?.status() ?? null;
  }

  start(input: RunnerInput, report: (e: MirrorEvent) => void): () => void {
    let run: R | null = null;
    let cancelled = false;
    const started = this.#previous.then(() => {
      if (cancelled) return;
      run = this.create(input, this.#lastPersisted, report, (c) => (this.#lastPersisted = c));
      this.#current = run;
    });
    return () => {
      cancelled = true;
      this.#previous = started.then(async () => {
        if (!run) return;
        await run.stop(4_000);
        this.stopped(run);
        // Every request has a timeout, so a run settles within seconds; should one not, say so and move on
        // rather than leave the mirror 'tailing' with no run behind it.
        const settled = await Promise.race([run.settled.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), SETTLE_LIMIT_MS).unref())]);
        if (!settled) {
          this.host.metrics.faults.labels({ code: 'EM_ERR_RUNNER_STUCK' }).inc();
          this.host.log.error({ limitMs: SETTLE_LIMIT_MS }, 'previous runner did not settle; starting the next one anyway');
        }
      });
    };
  }

  /** For shutdown: resolves when the current run has stopped, or after `deadlineMs`. */
  async drain(deadlineMs: number): Promise<void> {
    await Promise.race([this.#previous, new Promise<void>((r) => setTimeout(r, deadlineMs).unref())]);
  }

  actor() {
    return fromCallback<RunnerCommand, RunnerInput>(({ input, sendBack }) => {
      let live = true;
      const stop = this.start(input, (e) => live && sendBack(e));
      return () => {
        live = false;
        stop();
      };
    });
  }
}
