// The replication pipeline, for every source and destination kind (v2 → v2, v2 → v3, v3 → v3), on the seams of
// ./types.ts: the source's changes are read ahead while the destination's run applies them in source order with
// the concurrency it chooses (v3: whole revisions per Txn, one in flight; v2: one ordered lane, or lanes by key).
// What every kind shares lives here once: reading and backpressure, the reconcile to a snapshot, the checkpoint
// policy, the rollback of a contradicted quiet claim, the heal queue (heal-queue.ts), faults, stop and status.
import type { MirrorEvent, RunnerInput } from '../../machines/types.js';
import { faultFrom, MassDeleteRefusedError, SourceHistoryMismatchError } from '../etcd/errors.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from './ports.js';
import { RunHost, type RunnerStatus } from './run-host.js';
import { HealQueue } from './heal-queue.js';
import type { Destination, DestinationRun, Source, SourceMessage } from './types.js';
import { collectGarbage } from './memory.js';
import type { ChangeTracker } from './audit.js';

export interface PipelineDeps {
  config: ReplicationOptions;
  source: Source;
  dst: Destination;
  log: Log;
  metrics: ReplicationMetrics;
  /** Latest source revision/index seen by any request. */
  sourceRevision(): number | null;
  /** Audits in progress: told of every source change read (src/replication/audit.ts; the destination notes them). */
  trackers?: Set<ChangeTracker>;
}

/** Messages read ahead of the writer before the reader waits. */
const HIGH_WATER = 10_000;
/** Stored-checkpoint lag (in source indexes) above which a 'separate' checkpoint is written early. */
const INDEX_LAG_BOUND = 100;
const FAST_CHECKPOINT_MS = 10;
/** runner.progress at most this often: a v3 destination stores the checkpoint in every Txn, hundreds a second, and
 * each report is a transition of the machine (1.7 % of the mirror's CPU at 1,000 events/s, profiled). */
const PROGRESS_REPORT_MS = 50;

class SyncRun {
  readonly #abort = new AbortController();
  #phase: RunnerStatus['phase'] = 'snapshot';
  #reconcile: { done: number; total: number } | null = null;
  /** Source revision up to which everything is on the destination. */
  #applied: number | null = null;
  #persisted: number | null;
  /** Lowest checkpoint that may be stored: below it the destination is not known to match (reconcile pending). */
  #floor = Number.POSITIVE_INFINITY;
  /** Highest checkpoint that may be stored: below a contradicted quiet claim. */
  #ceiling = Number.POSITIVE_INFINITY;
  #lastCheckpointAt = 0;
  /** Changes pushed since the last checkpoint write ('separate' style: a quiet advance is written sooner). */
  #changesSincePersist = 0;
  #persisting: Promise<void> | null = null;
  #timer: NodeJS.Timeout | undefined;
  #timerDue = 0;
  #rollingBack: Promise<void> | null = null;
  #stopped = false;
  #faulted = false;
  #run: DestinationRun | null = null;
  /** Reload with a short-history source: what the reader delivered before the snapshot's revision was known. */
  #held: SourceMessage[] | null = null;
  /** Changes at or below it are in the snapshot the destination was reconciled to. */
  #covered = 0;
  /** Where a tailing run resumed: a source whose stream starts below it is another cluster. */
  #tailFrom: number | null = null;
  /** Why the reader stopped, when it failed. */
  #readFailure: { err: unknown } | null = null;
  /** Foreign changes and the audit's repairs, healed between two replicated writes (heal-queue.ts). */
  readonly #heals: HealQueue;
  #progressTimer: NodeJS.Timeout | undefined;
  #progressReportedAt = Number.NEGATIVE_INFINITY;
  readonly settled: Promise<void>;

  constructor(
    private readonly deps: PipelineDeps,
    private readonly input: RunnerInput,
    resumeFrom: number | null,
    private readonly report: (e: MirrorEvent) => void,
    private readonly onPersisted: (revision: number) => void,
  ) {
    this.#persisted = input.mode === 'tail' ? Math.max(input.appliedIndex ?? 0, resumeFrom ?? 0) : null;
    this.#heals = new HealQueue({
      log: deps.log,
      signal: this.#abort.signal,
      runnable: () => (this.#stopped || this.#faulted || !this.#run || this.#phase !== 'tail' ? null : this.#run),
      applied: () => this.#applied,
    });
    this.settled = this.#main();
  }

  status(): RunnerStatus {
    const w = this.#run?.status();
    return {
      mode: this.input.mode,
      phase: this.#phase,
      queue: w?.queue ?? 0,
      inFlight: w?.inFlight ?? 0,
      appliedIndex: this.#applied,
      persistedIndex: this.#persisted,
      sourceIndex: this.deps.sourceRevision(),
      reconcile: this.#reconcile,
      oldestUnappliedAt: w?.oldestUnappliedAt ?? null,
      confirmedIndex: this.deps.source.confirmedUpTo(),
      ordering: w?.ordering ?? 'strict',
      ...(w?.lane !== undefined ? { lane: w.lane } : {}),
      ...(w?.received !== undefined ? { received: w.received } : {}),
    };
  }

  async #main(): Promise<void> {
    const { source, log, dst } = this.deps;
    const signal = this.#abort.signal;
    try {
      const run = dst.open({
        mode: this.input.mode,
        source,
        signal,
        foreign: (keys) => this.#heals.foreign(keys),
        stored: () => this.#persisted,
      });
      this.#run = run;
      const hooks = {
        applied: (revision: number) => this.#onApplied(revision),
        failed: (err: unknown) => void this.#fault(err),
        checkpointFor: (upTo: number) => {
          const storable = this.#storable(upTo);
          return {
            checkpoint: this.#canPersist(storable) ? storable : null,
            waitMs: this.deps.config.checkpointMs - (Date.now() - this.#lastCheckpointAt),
          };
        },
        persisted: (revision: number) => this.#setPersisted(revision),
      };
      let changes: AsyncIterable<SourceMessage>;
      if (this.input.mode === 'tail') {
        const from = this.#persisted ?? 0;
        this.#floor = from;
        this.#tailFrom = from;
        await run.resume();
        run.start(from, hooks);
        this.#applied = from;
        this.#phase = 'tail';
        log.info({ fromIndex: from + 1 }, 'tailing the source');
        changes = source.changes(from, signal);
      } else if (source.liveBeforeSnapshot) {
        // Register the live reader before reading the snapshot: the catch-up after a long snapshot and reconcile
        // can then never ask for a cleared index. Until the snapshot's revision is known, what it delivers is held.
        this.#held = [];
        changes = source.changes('now', signal);
        let registered!: () => void;
        const isRegistered = new Promise<void>((r) => (registered = r));
        const reading = this.#read(changes, registered);
        reading.catch(() => {}); // awaited below; a failure before then surfaces through the race
        await Promise.race([isRegistered, reading]);
        const from = await this.#reconcileToSnapshot(signal);
        this.#startAfterReconcile(from, hooks);
        // The reader keeps appending while the held messages are handed over (each may wait for room): they go
        // straight to the writer only once none is left before them.
        const held = this.#held;
        while (held.length > 0 && !signal.aborted) await this.#deliver(held.shift()!);
        this.#held = null;
        await reading;
        return;
      } else {
        const from = await this.#reconcileToSnapshot(signal);
        this.#startAfterReconcile(from, hooks);
        changes = source.changes(from, signal);
      }
      await this.#read(changes);
    } catch (err) {
      if (!this.#stopped) await this.#fault(this.#readFailure ? this.#readFailure.err : err);
    } finally {
      // Every write started settles before the run does: none may land behind the next run's.
      await this.#run?.close();
    }
  }

  #startAfterReconcile(from: number, hooks: Parameters<DestinationRun['start']>[1]): void {
    // The snapshot is no longer referenced: collected now, its peak does not set how far garbage may grow.
    collectGarbage();
    this.#covered = from;
    this.#applied = from;
    this.#run!.start(from, hooks);
    this.#phase = 'tail';
  }

  /**
   * Reconciles the destination to a source snapshot; returns its revision. A method of its own: a suspended async
   * function keeps every local it ever held, and #main suspends for the whole tailing run — the snapshot (every
   * key and value of the prefix) would stay in memory as long.
   */
  async #reconcileToSnapshot(signal: AbortSignal): Promise<number> {
    const { source, log, metrics, dst } = this.deps;
    const started = Date.now();
    const snapshot = await source.snapshot(signal);
    const revision = snapshot.revision;
    log.info({ etcdIndex: revision, mode: this.input.mode }, 'source snapshot taken; reconciling the destination');
    this.#floor = revision;
    this.#phase = 'reconcile';
    const result = await this.#run!.reconcile(snapshot, (done, total) => (this.#reconcile = { done, total }));
    const seconds = (Date.now() - started) / 1000;
    metrics.reconcileWritten.inc(result.written);
    metrics.reconcileDeleted.inc(result.deleted);
    metrics.reconcileDuration.set(seconds);
    metrics.loadTime.observe(seconds);
    log.info({ ...result, etcdIndex: revision, seconds }, 'destination reconciled to the source snapshot');
    if (dst.checkpointStyle === 'txn') this.#setPersisted(revision);
    else await this.#persist(revision);
    this.#flushProgress();
    if (!this.#stopped) this.report({ type: 'runner.reconciled', etcdIndex: revision });
    return revision;
  }

  async #read(changes: AsyncIterable<SourceMessage>, registered?: () => void): Promise<void> {
    try {
      for await (const msg of changes) {
        if (this.#abort.signal.aborted) return;
        if (msg.kind === 'registered') {
          registered?.();
          continue;
        }
        if (this.#held) this.#held.push(msg);
        else await this.#deliver(msg);
      }
    } catch (err) {
      // The run ends with this error, not with the abort it causes elsewhere (a reconcile in progress).
      this.#readFailure ??= { err };
      this.#abort.abort();
      throw err;
    }
  }

  /** Hands one message to the destination's writer, after what only the pipeline decides. */
  async #deliver(msg: SourceMessage): Promise<void> {
    const run = this.#run!;
    const { metrics, log } = this.deps;
    if (msg.kind === 'registered') return;
    if (msg.kind === 'live') {
      // A store index never goes back: below the stored index, the source is not the cluster it was taken from.
      if (this.#tailFrom !== null && msg.revision < this.#tailFrom) {
        throw new SourceHistoryMismatchError(
          `the source's store index ${msg.revision} is below the stored replication index ${this.#tailFrom}: SRC is another cluster than the one replicated so far, or was restored from a backup; resynchronise with --reload`,
        );
      }
      run.push(msg);
      return;
    }
    const revision = msg.kind === 'change' ? msg.change.revision : msg.revision;
    // The reader, registered before the snapshot, may still be catching up through what the snapshot holds.
    if (revision <= this.#covered) return;
    if (msg.kind === 'change' && msg.change.skipped) {
      const { skipped } = msg.change;
      metrics.eventsSkipped.labels({ reason: skipped }).inc();
      if (skipped === 'ignored') metrics.replicatedEvents.inc();
      if (skipped === 'unknown') log.warn({ index: revision, action: msg.change.event?.action, key: msg.change.event?.node.key }, 'unknown action, not replicated');
      run.push({ kind: 'progress', revision });
    } else {
      if (msg.kind === 'change') this.#changesSincePersist++;
      run.push(msg);
    }
    if (this.deps.config.pipeline) await run.waitForRoom(HIGH_WATER);
    else {
      // The reference tool's loop: nothing is read until the change and the checkpoint are written.
      await run.idle();
      const storable = this.#applied === null ? null : this.#storable(this.#applied);
      if (storable !== null && this.#canPersist(storable) && this.deps.dst.checkpointStyle === 'separate') await this.#persist(storable);
    }
  }

  #onApplied(revision: number): void {
    this.#applied = revision;
    const { metrics } = this.deps;
    metrics.lastApplyAt = Date.now();
    metrics.lastApply.set(metrics.lastApplyAt / 1000);
    if (this.deps.dst.checkpointStyle === 'separate') this.#schedulePersist();
    this.#heals.schedule();
  }

  /** The highest checkpoint that may be stored once everything up to `applied` is on the destination. */
  #storable(applied: number): number {
    return Math.min(this.deps.source.storable(applied), this.#ceiling);
  }

  #canPersist(checkpoint: number): boolean {
    return checkpoint >= this.#floor && checkpoint <= this.#ceiling && (this.#persisted === null || checkpoint > this.#persisted);
  }

  /**
   * 'separate' style: one checkpoint write per --checkpoint-ms. When the store races ahead around a quiet prefix
   * (the checkpoint moves by quiet proofs, hardly by changes), write sooner, so the stored index never trails by
   * more than a fraction of etcd's 1000-event window; changes themselves never cost more than one checkpoint
   * write per --checkpoint-ms.
   */
  #schedulePersist(): void {
    if (this.#stopped || this.#faulted || this.#applied === null) return;
    const behind = this.#storable(this.#applied) - (this.#persisted ?? 0);
    const quietAdvance = behind >= INDEX_LAG_BOUND && this.#changesSincePersist * 20 < behind;
    const spacing = quietAdvance ? Math.min(FAST_CHECKPOINT_MS, this.deps.config.checkpointMs) : this.deps.config.checkpointMs;
    const due = this.#lastCheckpointAt + spacing;
    if (this.#timer && this.#timerDue <= due) return;
    clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#maybePersist();
    }, Math.max(0, due - Date.now()));
  }

  async #maybePersist(): Promise<void> {
    if (this.#persisting || this.#faulted || this.#applied === null || !this.#canPersist(this.#storable(this.#applied))) return;
    try {
      await this.#persist(this.#storable(this.#applied));
    } catch (err) {
      void this.#fault(err);
    }
  }

  /** 'separate' style: stores `checkpoint` (one write at a time). */
  async #persist(checkpoint: number): Promise<void> {
    while (this.#persisting) await this.#persisting.catch(() => {});
    if (!this.#canPersist(checkpoint)) return;
    this.#lastCheckpointAt = Date.now();
    this.#changesSincePersist = 0;
    this.#persisting = (async () => {
      await this.#run!.writeCheckpoint(checkpoint, this.#stopped ? undefined : this.#abort.signal);
      this.#setPersisted(checkpoint);
    })();
    try {
      await this.#persisting;
    } finally {
      this.#persisting = null;
      // What became storable while this write was on its way: the timer that fired meanwhile found it busy.
      if (!this.#faulted && this.#applied !== null && this.#canPersist(this.#storable(this.#applied))) this.#schedulePersist();
    }
  }

  #setPersisted(revision: number): void {
    this.#persisted = revision;
    this.#lastCheckpointAt = Date.now();
    this.onPersisted(revision);
    this.deps.metrics.appliedIndex.set(revision);
    this.deps.metrics.indexWrites.inc();
    this.#run?.stored?.(revision);
    this.#reportProgress();
  }

  /** Reports the stored checkpoint now, or once PROGRESS_REPORT_MS after the last report (the latest one then). */
  #reportProgress(): void {
    if (this.#stopped || this.#progressTimer) return;
    const wait = this.#progressReportedAt + PROGRESS_REPORT_MS - performance.now();
    if (wait <= 0) this.#sendProgress();
    else this.#progressTimer = setTimeout(() => this.#sendProgress(), wait);
  }

  /** A report due goes out now: before any other report, so that the machine hears them in the order they happened. */
  #sendProgress(): void {
    clearTimeout(this.#progressTimer);
    this.#progressTimer = undefined;
    if (this.#stopped || this.#persisted === null) return;
    this.#progressReportedAt = performance.now();
    this.report({ type: 'runner.progress', appliedIndex: this.#persisted, sourceIndex: this.deps.sourceRevision() });
  }

  #flushProgress(): void {
    if (this.#progressTimer) this.#sendProgress();
  }

  /** The audit's repairs: through the same queue as foreign changes; resolves with the keys written (0 for those
   * the run ends before). */
  heal(keys: Buffer[]): Promise<number> {
    if (this.#stopped || keys.length === 0) return Promise.resolve(0);
    return this.#heals.audit(keys);
  }

  /**
   * The audit's point ('txn' style): the checkpoint written again, alone, between two Txns — so never inside a
   * revision split over several, and after every heal. Its Txn is a revision at which the destination holds
   * exactly the replica of what the checkpoint says, and a recent one (an idle source writes no checkpoints).
   */
  checkpointNow(): Promise<boolean> {
    const run = this.#run;
    if (this.#stopped || !run || this.#phase !== 'tail') return Promise.resolve(false);
    return run
      .barrier(async () => {
        const checkpoint = this.#applied === null ? null : this.#storable(this.#applied);
        // Never below what is stored (a v2 source's unconfirmed claims): no point then, the audit tries next time.
        if (checkpoint === null || checkpoint < (this.#persisted ?? Number.NEGATIVE_INFINITY) || this.#abort.signal.aborted) return false;
        await run.writeCheckpoint(checkpoint);
        this.#setPersisted(checkpoint);
        return true;
      })
      .catch(() => false);
  }

  async #fault(err: unknown): Promise<void> {
    if (this.#faulted || this.#stopped) return;
    this.#faulted = true;
    const { metrics } = this.deps;
    this.#run?.halt();
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#heals.close();
    const fault = faultFrom(err);
    metrics.faults.labels({ code: fault.code }).inc();
    const e = err as { claimFrom?: unknown };
    // A contradicted claim also asks for a resync, but the window was not left.
    if (fault.historyLost && typeof e.claimFrom !== 'number') metrics.outOfWindow.inc();
    if (err instanceof MassDeleteRefusedError) metrics.massDeleteRefused.inc();
    // A contradicted quiet claim (v2 source): nothing above its start is stored from now on; should the stored
    // checkpoint already be past it (a claim confirmed by time, then contradicted after all), it is put back
    // before anyone hears of the fault, so that a crash before the resync resumes below the event.
    if (typeof e.claimFrom === 'number') {
      const below = e.claimFrom - 1;
      this.#ceiling = Math.min(this.#ceiling, below);
      this.#rollingBack = this.#rollBack(below);
      await this.#rollingBack;
    }
    this.#flushProgress();
    this.report({ type: 'runner.fault', fault });
  }

  async #rollBack(below: number): Promise<void> {
    const { log } = this.deps;
    while (this.#persisting) await this.#persisting.catch(() => {}); // a checkpoint write on its way lands first
    if (this.#persisted === null || this.#persisted <= below || !this.#run) return;
    log.warn({ from: this.#persisted, to: below }, 'a quiet proof was contradicted; the stored replication index goes back below it');
    await this.#run.writeCheckpoint(below).then(
      () => this.#setPersisted(below),
      (rollbackErr: unknown) => log.error({ err: rollbackErr }, 'could not put the stored replication index back'),
    );
  }

  /** Stop reading, let the writes in flight land, store the checkpoint of what is applied. */
  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#flushProgress();
    this.#stopped = true;
    this.#phase = 'stopping';
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#heals.close();
    const deadline = new Promise<void>((r) => setTimeout(r, deadlineMs).unref());
    await Promise.race([this.settled, deadline]);
    if (this.#rollingBack) await Promise.race([this.#rollingBack, deadline]);
    // What is storable only ever covers applied changes and confirmed proofs, so it is safe even after a fault.
    if (this.#applied !== null && this.#run) {
      const storable = this.#storable(this.#applied);
      if (this.#canPersist(storable)) {
        const stored = this.#persistFinal(storable).catch((err: unknown) => this.deps.log.warn({ err }, 'could not store the final replication index'));
        await Promise.race([stored, deadline]);
      }
    }
    this.#phase = 'stopped';
  }

  async #persistFinal(checkpoint: number): Promise<void> {
    if (this.deps.dst.checkpointStyle === 'separate') return this.#persist(checkpoint);
    await this.#run!.writeCheckpoint(checkpoint);
    this.#setPersisted(checkpoint);
  }
}

/** Every destination kind's runs; the destination keeps leases (and TTL copies) alive only while a run is on. */
export class PipelineHost extends RunHost<SyncRun> {
  constructor(private readonly deps: PipelineDeps) {
    super(deps);
  }

  protected create(input: RunnerInput, resumeFrom: number | null, report: (e: MirrorEvent) => void, onPersisted: (revision: number) => void): SyncRun {
    for (const t of this.deps.trackers ?? []) t.interrupted = true;
    return new SyncRun(this.deps, input, resumeFrom, report, onPersisted);
  }

  // No lease keepalives between runs (nor from a standby: --ha).
  protected override stopped(): void {
    this.deps.dst.pause?.();
  }

  /** The audit's repairs, through the current run's heal queue (0 between runs). */
  heal(keys: Buffer[]): Promise<number> {
    return this.current?.heal(keys) ?? Promise.resolve(0);
  }

  /** The audit's point, written by the current run (false between runs). */
  checkpointNow(): Promise<boolean> {
    return this.current?.checkpointNow() ?? Promise.resolve(false);
  }

  override async drain(deadlineMs: number): Promise<void> {
    await super.drain(deadlineMs);
    this.deps.dst.pause?.();
  }
}
