// The replication pipeline for a v3 destination, on the seams of ./types.ts: the source's changes (v2 or v3)
// are read ahead into a queue while one writer applies them in source order, as Txns that each carry whole
// revisions — as many as fit the destination's operation limit — and the checkpoint after them. One Txn in
// flight at a time: two could be applied by the destination in either order.
import type { MirrorEvent, RunnerInput } from '../../machines/types.js';
import { faultFrom } from '../etcd/errors.js';
import { TooManyOpsError } from '../etcd/v3/errors.js';
import { subtreeRanges, type DstWrite, type V3Destination } from './v3-destination.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from './ports.js';
import { RunHost, type RunnerStatus } from './run-host.js';
import type { OwnWrites } from './own-writes.js';
import { oversizeRevision, TxnBatch } from './batch.js';
import { DestinationWatch } from './dst-watch.js';
import { keyId, type ByteKeyMap } from './keyspace.js';
import type { LeaseMirror } from './leases.js';
import { resync } from './resync.js';
import type { Change, LeaseRef, Source, SourceMessage } from './types.js';
import type { ChangeTracker } from './audit.js';

export interface PipelineDeps {
  config: ReplicationOptions;
  source: Source;
  dst: V3Destination;
  keys: ByteKeyMap;
  leases: LeaseMirror;
  log: Log;
  metrics: ReplicationMetrics;
  /** Latest source revision/index seen by any request. */
  sourceRevision(): number | null;
  /** The source lease a destination key's lease stands for (adopting leases after a restart). */
  leaseFor(dstKey: Buffer, dstLease: string): LeaseRef;
  /** Our destination writes (Txns), to tell foreign changes from them. */
  own: OwnWrites;
  /** Audits in progress: told of every source change read (src/replication/audit.ts). */
  trackers?: Set<ChangeTracker>;
}

/** Messages read ahead of the writer before the reader waits. */
const HIGH_WATER = 10_000;
/** How soon a heal that must wait for the destination to catch up is tried again. */
const HEAL_RETRY_MS = 200;

interface Queued {
  msg: SourceMessage;
  at: number;
  /** The change's destination writes, planned once (leases granted). */
  writes?: DstWrite[];
}

class SyncRun {
  readonly #abort = new AbortController();
  readonly #queue: Queued[] = [];
  #phase: RunnerStatus['phase'] = 'snapshot';
  #reconcile: { done: number; total: number } | null = null;
  /** Source revision up to which everything is on the destination. */
  #applied: number | null = null;
  #persisted: number | null;
  #lastCheckpointAt = 0;
  #inFlight = 0;
  #stopped = false;
  #wakeWriter: (() => void) | null = null;
  #wakeReader: (() => void) | null = null;
  /** Destination keys someone else changed, to restore to the source (retryAt: not before that revision);
   * `audit`: an audit found it differing. */
  readonly #heals = new Map<string, { key: Buffer; retryAt: number; audit?: boolean }>();
  /** Audits waiting for their keys to be healed, with the writes made for them so far. */
  #healWaiters: { ids: Set<string>; written: number; done: (written: number) => void }[] = [];
  /** Audits waiting for the checkpoint to be written again (checkpointNow); told whether it was. */
  #checkpointWaiters: ((written: boolean) => void)[] = [];
  #dstWatch: DestinationWatch | null = null;
  readonly settled: Promise<void>;

  constructor(
    private readonly deps: PipelineDeps,
    private readonly input: RunnerInput,
    resumeFrom: number | null,
    private readonly report: (e: MirrorEvent) => void,
    private readonly onPersisted: (revision: number) => void,
  ) {
    this.#persisted = input.mode === 'tail' ? Math.max(input.appliedIndex ?? 0, resumeFrom ?? 0) : null;
    this.settled = this.#run();
  }

  status(): RunnerStatus {
    const first = this.#queue.find((q) => q.msg.kind === 'change');
    return {
      mode: this.input.mode,
      phase: this.#phase,
      queue: this.#queue.length,
      inFlight: this.#inFlight,
      appliedIndex: this.#applied,
      persistedIndex: this.#persisted,
      sourceIndex: this.deps.sourceRevision(),
      reconcile: this.#reconcile,
      oldestUnappliedAt: first?.at ?? null,
      confirmedIndex: null,
      ordering: 'strict',
    };
  }

  async #run(): Promise<void> {
    const { source, log } = this.deps;
    const signal = this.#abort.signal;
    try {
      this.#dstWatch = new DestinationWatch(this.deps.dst.client, this.deps.keys, this.deps.own, log, (keys) => {
        for (const key of keys) this.#heals.set(keyId(key), { key, retryAt: 0 });
        this.#wake();
      });
      this.#dstWatch.start((await this.deps.dst.client.status()).revision + 1);
      let from: number;
      if (this.input.mode === 'tail') {
        from = this.#persisted ?? 0;
        if (!this.deps.leases.seeded) await this.#adoptLeases();
      } else {
        from = await this.#reconcileToSnapshot(signal);
      }
      this.#applied = from;
      this.#phase = 'tail';
      // Both loops end before the run settles: a fault must not leave a Txn in flight behind the next run.
      const ended = await Promise.allSettled([this.#read(source.changes(from, signal)), this.#write()]);
      const failed = ended.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      if (!this.#stopped) await this.#fault(err);
    }
  }

  /**
   * Reconciles the destination to a source snapshot; returns its revision. A method of its own: a suspended async
   * function keeps every local it ever held, and #run suspends for the whole tailing run — the snapshot (every key
   * and value of the prefix) would stay in memory as long.
   */
  async #reconcileToSnapshot(signal: AbortSignal): Promise<number> {
    const { source, log, metrics, config } = this.deps;
    const started = Date.now();
    const snapshot = await source.snapshot(signal);
    this.#phase = 'reconcile';
    const result = await resync(
      { dst: this.deps.dst, keys: this.deps.keys, leases: this.deps.leases, guard: { allowMassDelete: config.allowMassDelete, massDeleteRatio: config.massDeleteRatio } },
      snapshot,
      (done, total) => (this.#reconcile = { done, total }),
      signal,
    );
    metrics.reconcileWritten.inc(result.written);
    metrics.reconcileDeleted.inc(result.deleted);
    metrics.reconcileDuration.set((Date.now() - started) / 1000);
    metrics.loadTime.observe((Date.now() - started) / 1000);
    log.info({ revision: snapshot.revision, ...result, ms: Date.now() - started }, `destination reconciled to the source snapshot at ${snapshot.revision}`);
    this.#setPersisted(snapshot.revision);
    if (!this.#stopped) this.report({ type: 'runner.reconciled', etcdIndex: snapshot.revision });
    return snapshot.revision;
  }

  async #read(changes: AsyncIterable<SourceMessage>): Promise<void> {
    try {
      for await (const msg of changes) {
        if (this.#abort.signal.aborted) return;
        const trackers = this.deps.trackers;
        if (msg.kind === 'change' && trackers?.size) {
          for (const op of msg.change.ops) for (const t of trackers) t.note(keyId(this.deps.keys.toDst(op.key)), msg.change.revision, op.kind === 'deleteTree');
        }
        this.#queue.push({ msg, at: Date.now() });
        this.#wake();
        while (this.#queue.length >= HIGH_WATER && !this.#abort.signal.aborted) await new Promise<void>((r) => (this.#wakeReader = r));
      }
    } catch (err) {
      this.#abort.abort();
      throw err;
    } finally {
      this.#wake();
    }
  }

  #wake(): void {
    const w = this.#wakeWriter;
    this.#wakeWriter = null;
    w?.();
  }

  #idle(ms?: number): Promise<void> {
    return new Promise<void>((r) => {
      const timer = ms === undefined ? undefined : setTimeout(r, ms);
      this.#wakeWriter = () => {
        clearTimeout(timer);
        r();
      };
    });
  }

  /** After a restart: copies already on destination leases are kept alive from now on, as if just written. */
  async #adoptLeases(): Promise<void> {
    const { dst, leases, leaseFor, log } = this.deps;
    let adopted = 0;
    for (const entry of (await dst.readTree()).values()) {
      if (!entry.lease || entry.lease === '0') continue;
      leases.adopt(leaseFor(entry.key, entry.lease), entry.lease);
      adopted++;
    }
    leases.seeded = true;
    if (adopted > 0) log.info({ keys: adopted, leases: leases.size }, 'destination copies on leases found; their source leases are followed again');
  }

  /** The destination writes for one change: keys mapped, leases granted. */
  async #plan(change: Change): Promise<DstWrite[]> {
    const { keys, leases } = this.deps;
    const writes: DstWrite[] = [];
    for (const op of change.ops) {
      const key = keys.toDst(op.key);
      if (op.kind === 'put') {
        const lease = op.lease ? await leases.attach(op.lease) : undefined;
        writes.push({ kind: 'put', key, value: op.value, ...(lease ? { lease } : {}) });
      } else if (op.kind === 'delete') writes.push({ kind: 'delete', key });
      else {
        writes.push({ kind: 'delete', key });
        for (const r of subtreeRanges(key)) writes.push({ kind: 'delete', key: r.key, rangeEnd: r.rangeEnd });
      }
    }
    return writes;
  }

  async #write(): Promise<void> {
    try {
      await this.#writeLoop();
    } catch (err) {
      this.#abort.abort();
      this.#wakeReader?.();
      throw err;
    }
  }

  async #writeLoop(): Promise<void> {
    const { dst, source, metrics } = this.deps;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      if (this.#heals.size > 0) await this.#heal();
      if (this.#checkpointWaiters.length > 0) await this.#checkpointAgain();
      if (this.#queue.length === 0) {
        await this.#idle(this.#heals.size > 0 ? HEAL_RETRY_MS : undefined);
        continue;
      }
      const batch = new TxnBatch(dst.maxOps);
      let writes: DstWrite[] | null = null;
      let taken = 0;
      let upTo = this.#applied ?? 0;
      for (const q of this.#queue) {
        if (q.msg.kind === 'progress') {
          upTo = Math.max(upTo, q.msg.revision);
          taken++;
          continue;
        }
        q.writes ??= await this.#plan(q.msg.change);
        if (!batch.tryAdd(q.writes)) {
          if (batch.size > 0) break;
          // Alone it does not fit: a revision larger than a Txn may carry.
          writes = await oversizeRevision(this.deps, q.msg.change, q.writes);
          upTo = q.msg.change.revision;
          taken++;
          break;
        }
        upTo = q.msg.change.revision;
        taken++;
      }
      writes ??= batch.writes();
      const storable = source.storable(upTo);
      const checkpoint = storable > (this.#persisted ?? Number.NEGATIVE_INFINITY) ? storable : null;
      if (writes.length === 0) {
        const wait = this.deps.config.checkpointMs - (Date.now() - this.#lastCheckpointAt);
        // Proofs of progress alone: the checkpoint follows them at most every --checkpoint-ms.
        if (checkpoint !== null && wait > 0) {
          await this.#idle(wait);
          continue;
        }
      }
      const started = performance.now();
      this.#inFlight = 1;
      try {
        if (writes.length > 0 || checkpoint !== null) await dst.commit(writes, checkpoint);
      } catch (err) {
        if (err instanceof TooManyOpsError) {
          this.deps.log.warn({ maxOps: dst.maxOps }, 'the destination allows fewer operations per Txn than configured; batches are cut smaller');
          continue;
        }
        throw err;
      } finally {
        this.#inFlight = 0;
      }
      if (writes.length > 0) metrics.writeLatency.observe((performance.now() - started) / 1000);
      const done = this.#queue.splice(0, taken);
      for (const q of done) {
        if (q.msg.kind !== 'change') continue;
        metrics.replicatedEvents.inc();
        for (const op of q.msg.change.ops) metrics.eventsApplied.labels({ action: op.kind }).inc();
      }
      if (this.#wakeReader && this.#queue.length < HIGH_WATER) {
        const r = this.#wakeReader;
        this.#wakeReader = null;
        r();
      }
      this.#applied = upTo;
      metrics.lastApplyAt = Date.now();
      metrics.lastApply.set(metrics.lastApplyAt / 1000);
      if (checkpoint !== null) this.#setPersisted(checkpoint);
    }
  }

  /**
   * Restores keys someone else changed on the destination to the source's state at the revision the destination
   * is at, in one Txn between two batches: the replica stays a state the source had, and no replayed event
   * is in flight meanwhile.
   */
  async #heal(): Promise<void> {
    const { source, dst, keys, leases, log, metrics } = this.deps;
    const at = this.#applied;
    if (at === null) return;
    const writes: DstWrite[] = [];
    for (const [id, h] of this.#heals) {
      if (h.retryAt > at || writes.length + 1 >= dst.maxOps) continue;
      try {
        const state = await source.keyAt(keys.toSrc(h.key), at, this.#abort.signal);
        if ('retryAt' in state) {
          h.retryAt = state.retryAt;
          continue;
        }
        this.#heals.delete(id);
        if ('superseded' in state) continue;
        const e = state.entry;
        const lease = e?.lease ? await leases.attach(e.lease) : undefined;
        writes.push(e ? { kind: 'put', key: h.key, value: e.value, ...(lease ? { lease } : {}) } : { kind: 'delete', key: h.key });
        metrics.healed.labels({ reason: h.audit ? 'audit' : e ? 'foreign change' : 'foreign create' }).inc();
        for (const w of this.#healWaiters) if (w.ids.has(id)) w.written++;
      } catch (err) {
        this.#heals.delete(id);
        log.warn({ err, key: h.key.toString('utf8') }, 'could not read the source to heal a destination key; it is healed when the source changes it');
      }
    }
    if (writes.length > 0) {
      await dst.commit(writes, null);
      log.warn({ keys: writes.map((w) => w.key.toString('utf8')).slice(0, 20), count: writes.length, atRevision: at }, 'destination keys changed by someone else were restored to the source');
    }
    this.#settleHealWaiters(false);
  }

  /** The audit's repairs: restored to the source between two Txns, as foreign changes are; resolves with the
   * keys written (0 for those the run ends before). */
  heal(keys: Buffer[]): Promise<number> {
    if (this.#stopped || keys.length === 0) return Promise.resolve(0);
    const ids = new Set<string>();
    for (const key of keys) {
      const id = keyId(key);
      ids.add(id);
      this.#heals.set(id, { key, retryAt: 0, audit: true });
    }
    return new Promise<number>((done) => {
      this.#healWaiters.push({ ids, written: 0, done });
      this.#wake();
    });
  }

  /**
   * The audit's point (v3 → v3): the checkpoint written again, alone, between two Txns — so never inside a
   * revision split over several, and after every heal. Its Txn is a revision at which the destination holds
   * exactly the replica of what the checkpoint says, and a recent one (an idle source writes no checkpoints).
   */
  checkpointNow(): Promise<boolean> {
    if (this.#stopped) return Promise.resolve(false);
    return new Promise<boolean>((done) => {
      this.#checkpointWaiters.push(done);
      this.#wake();
    });
  }

  async #checkpointAgain(): Promise<void> {
    const waiters = this.#checkpointWaiters.splice(0);
    const checkpoint = this.#applied === null ? null : this.deps.source.storable(this.#applied);
    // Never below what is stored (a v2 source's unconfirmed claims): no point then, the audit tries next time.
    if (checkpoint === null || checkpoint < (this.#persisted ?? Number.NEGATIVE_INFINITY)) {
      for (const w of waiters) w(false);
      return;
    }
    await this.deps.dst.commit([], checkpoint);
    this.#setPersisted(checkpoint);
    for (const w of waiters) w(true);
  }

  /** Resolves the waiters whose keys are all handled (`all`: every one, the run is ending). */
  #settleHealWaiters(all: boolean): void {
    this.#healWaiters = this.#healWaiters.filter((w) => {
      if (!all && [...w.ids].some((id) => this.#heals.has(id))) return true;
      w.done(w.written);
      return false;
    });
  }

  #setPersisted(revision: number): void {
    this.#persisted = revision;
    this.#lastCheckpointAt = Date.now();
    this.onPersisted(revision);
    this.deps.metrics.appliedIndex.set(revision);
    this.deps.metrics.indexWrites.inc();
    if (!this.#stopped) this.report({ type: 'runner.progress', appliedIndex: revision, sourceIndex: this.deps.sourceRevision() });
  }

  async #fault(err: unknown): Promise<void> {
    const { metrics, dst, log } = this.deps;
    this.#abort.abort();
    this.#dstWatch?.stop();
    this.#settleHealWaiters(true);
    for (const w of this.#checkpointWaiters.splice(0)) w(false);
    const fault = faultFrom(err);
    metrics.faults.labels({ code: fault.code }).inc();
    if (fault.historyLost) metrics.outOfWindow.inc();
    // A contradicted quiet claim (v2 source): the checkpoint goes back below the event it skipped before anyone
    // hears of it, so a crash before the resync resumes below it.
    const e = err as { claimFrom?: unknown };
    const below = typeof e.claimFrom === 'number' ? e.claimFrom - 1 : null;
    if (below !== null && this.#persisted !== null && this.#persisted > below) {
      await dst.commit([], below).then(
        () => this.#setPersisted(below),
        (rollbackErr: unknown) => log.error({ err: rollbackErr }, 'could not put the stored replication index back'),
      );
    }
    this.report({ type: 'runner.fault', fault });
  }

  /** Stop reading, let the Txn in flight land, store the checkpoint of what is applied. */
  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#phase = 'stopping';
    this.#abort.abort();
    this.#wake();
    this.#wakeReader?.();
    this.#dstWatch?.stop();
    this.#settleHealWaiters(true);
    for (const w of this.#checkpointWaiters.splice(0)) w(false);
    const deadline = new Promise<void>((r) => setTimeout(r, deadlineMs).unref());
    await Promise.race([this.settled, deadline]);
    if (this.#applied !== null) {
      const storable = this.deps.source.storable(this.#applied);
      if (storable > (this.#persisted ?? Number.NEGATIVE_INFINITY)) {
        const stored = this.deps.dst.commit([], storable).then(
          () => this.#setPersisted(storable),
          (err: unknown) => this.deps.log.warn({ err }, 'could not store the final replication index'),
        );
        await Promise.race([stored, deadline]);
      }
    }
    this.#phase = 'stopped';
  }
}

/** The v3 destination's runs; the lease mirror follows source leases only while a run is on. */
export class PipelineHost extends RunHost<SyncRun> {
  constructor(private readonly deps: PipelineDeps) {
    super(deps);
  }

  protected create(input: RunnerInput, resumeFrom: number | null, report: (e: MirrorEvent) => void, onPersisted: (revision: number) => void): SyncRun {
    this.deps.leases.start();
    for (const t of this.deps.trackers ?? []) t.interrupted = true;
    return new SyncRun(this.deps, input, resumeFrom, report, onPersisted);
  }

  // No lease keepalives between runs (nor from a standby: --ha).
  protected override stopped(): void {
    this.deps.leases.stop();
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
    this.deps.leases.stop();
  }
}
