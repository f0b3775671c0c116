// The runner for a v2 destination: what the machine's `running` state invokes (through RunHost, ../run-host.ts).
// It wires the poller (source) to the writer (destination), persists the checkpoint, and reports progress and
// faults back to the machine.
import type { MirrorEvent, RunnerInput } from '../../../machines/types.js';
import { RunHost, type RunnerStatus } from '../run-host.js';
import { executeOp, opFootprint, planEvent, type ApplyStats, type DstOp, type LeafOp } from './apply.js';
import type { EtcdClient } from '../../etcd/v2/client.js';
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { CompareFailedError, EventIndexClearedError, faultFrom, FencedError, KeyNotFoundError, MassDeleteRefusedError, NodeExistError, ResyncNeededError, SourceHistoryMismatchError } from '../../etcd/errors.js';
import type { V2Fence } from '../ha-lock.js';
import type { KeyMap } from '../keys.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from '../ports.js';
import type { OrderingPolicy } from './ordering.js';
import type { BodyGaps } from './body-gaps.js';
import { runPoller } from './poller.js';
import type { SourceBudget } from './source-budget.js';
import { reconcile, takeSnapshot } from './reconcile.js';
import { Coverage } from './coverage.js';
import { Healer } from './healer.js';
import type { OwnWrites } from '../own-writes.js';
import { TtlKeeper } from './ttl-keeper.js';
import { withWriteRetries } from './write-retry.js';
import { alreadyApplied, keysToRead, readCopies, stoppedCleanly, type ReplayItem } from './replay-guard.js';
import { StrictLane } from './strict-lane.js';
import { OrderedWriter } from './writer.js';
import type { ChangeTracker } from '../audit.js';

export interface RunnerDeps {
  config: ReplicationOptions;
  src: EtcdClient;
  dst: EtcdClient;
  map: KeyMap;
  log: Log;
  metrics: ReplicationMetrics;
  /** The destination client's own writes, to tell them from foreign changes. */
  own: OwnWrites;
  /** --ordering, with the adaptive mode's state: kept across runners. */
  ordering: OrderingPolicy;
  /** Header-to-body gaps of source watches: kept across runners, so a lesson is not forgotten on a restart. */
  gaps: BodyGaps;
  /** --ha: checkpoint writes are compare-and-swaps (every write also passes the fence check in the destination
   * client's write hook, see src/replication/v2-backend.ts). */
  fence?: V2Fence;
  /** An expensive source's request budget (quiet proofs, TTL re-reads). */
  budget?: SourceBudget;
  /** Audits in progress: told of every source change handed to the writer (src/replication/audit.ts). */
  trackers?: Set<ChangeTracker>;
}

/** Writes the checkpoint; with --ha as a compare-and-swap on this instance's own previous write. */
export async function writeCheckpoint(dst: EtcdClient, key: string, index: number, fence: V2Fence | undefined): Promise<void> {
  if (!fence) {
    await dst.put(key, { value: String(index) });
    return;
  }
  try {
    const cas = fence.prevIndex === null ? { prevExist: false } : { prevIndex: fence.prevIndex };
    fence.prevIndex = (await dst.put(key, { value: String(index), ...cas })).body.node.modifiedIndex;
  } catch (err) {
    if (err instanceof CompareFailedError || err instanceof NodeExistError || err instanceof KeyNotFoundError) {
      throw new FencedError('the replication index was written by someone else since this instance last wrote it: another instance is active');
    }
    throw err;
  }
}

/** Stored-index lag (in source indexes) above which the index is written early. */
const INDEX_LAG_BOUND = 100;
const FAST_CHECKPOINT_MS = 10;


/** A reconcile writes independent keys (parents first): it can use more connections than event replay. */
const RECONCILE_FANOUT = 4;

/** Strict order: writes queued on the ordered lane. It saves the event-loop turn between two writes (measured on
 * the bench machine: a backlog replayed at ~2,900 events/s this way, ~2,000 one write at a time). */
const LANE_DEPTH = 8;

/** Prefetched-but-unapplied events the poller may run ahead by. */
const HIGH_WATER = 10_000;

/**
 * The op of an event that writes or removes one key which is no directory before or after (one request: it may
 * go on the ordered lane, and a replay can tell from the key's value whether it was applied), with the key's
 * value right before the event (null: it did not exist). Null for anything else.
 */
function leafOf(ev: EtcdEvent, op: DstOp): { op: LeafOp; before: string | null } | null {
  if (ev.node.dir === true || ev.prevNode?.dir === true || (op.kind !== 'put' && op.kind !== 'delete')) return null;
  return { op, before: ev.prevNode?.value ?? null };
}

class Runner {
  readonly #abort = new AbortController();
  #writer: OrderedWriter | null = null;
  /** Writes in strict order, on one connection (src/strict-lane.ts). */
  #lane: StrictLane | null = null;
  #keeper: TtlKeeper | null = null;
  #healer: Healer | null = null;
  /** What the poller delivered before the snapshot index was known (reload/recover only). */
  #held: { index: number; ev?: EtcdEvent }[] | null = null;
  /** Tail mode: what the poller delivered up to the source's store index at the start, held back until the
   * destination has said which of it is already applied (src/replay-guard.ts). */
  #replay: { upTo: number | null; items: { index: number; ev?: EtcdEvent }[]; releasing: boolean } | null = null;
  /** Source index of the snapshot the destination is reconciled to (0 when tailing from a stored index). */
  #coveredBySnapshot = 0;
  #persisted: number | null = null;
  /** Lowest index that may be stored: below it the destination is not known to match (reconcile pending). */
  #floor = Number.POSITIVE_INFINITY;
  #persisting: Promise<void> | null = null;
  /** Pending index write; at most one every checkpointMs (leading edge, so quiet proofs are stored fast). */
  #timer: NodeJS.Timeout | undefined;
  #lastPersistAt = 0;
  /** Events handed to the writer since the last index write. */
  #eventsSincePersist = 0;
  #timerDue = 0;
  #faulted = false;
  #stopped = false;
  #rollingBack: Promise<void> | null = null;
  #sourceIndex: number | null = null;
  #phase: RunnerStatus['phase'] = 'snapshot';
  #reconcile: { done: number; total: number } | null = null;
  /** Receive time of events not yet behind the checkpoint, in index order. */
  readonly #received = new Map<number, number>();
  /** Mirrored events received this run that need a write. */
  #mirroredReceived = 0;
  /** Up to here every quiet claim of the poller is confirmed (events need no confirmation). */
  #confirmed = Number.NEGATIVE_INFINITY;
  /** Subtrees a heal reconciled to a snapshot ahead of the writer. */
  readonly #coverage = new Coverage();
  readonly #healStats: ApplyStats;
  /** Settles when the run loop and every write it started have finished. */
  readonly settled: Promise<void>;

  constructor(
    private readonly deps: RunnerDeps,
    private readonly input: RunnerInput,
    private readonly resumeFrom: number | null,
    private readonly report: (e: MirrorEvent) => void,
    private readonly onPersisted: (index: number) => void,
    /** TTL keys the previous runner tracked (null: read them from the source). */
    private readonly ttlKeys: string[] | null,
  ) {
    this.#healStats = {
      onHealed: (reason, key) => {
        deps.metrics.healed.labels({ reason }).inc();
        deps.log.warn({ key, reason }, 'destination diverged from the source; repaired');
      },
    };
    this.settled = this.#run();
  }

  status(): RunnerStatus {
    const oldest = this.#received.values().next();
    return {
      mode: this.input.mode,
      phase: this.#phase,
      queue: this.#writer?.size ?? 0,
      inFlight: this.#writer?.inFlight ?? 0,
      appliedIndex: this.#writer?.checkpoint ?? null,
      persistedIndex: this.#persisted,
      sourceIndex: this.#sourceIndex,
      reconcile: this.#reconcile,
      oldestUnappliedAt: oldest.done ? null : oldest.value,
      confirmedIndex: Number.isFinite(this.#confirmed) ? this.#confirmed : null,
      ordering: this.#writer?.ordering ?? this.deps.ordering.writerOrdering,
      lane: this.#lane?.stats() ?? null,
      received: this.#mirroredReceived,
    };
  }

  /** The audit's repairs: through the healer, a barrier in the writer. */
  heal(keys: string[]): Promise<number> {
    return this.#healer?.healKeys(keys, 'audit') ?? Promise.resolve(0);
  }

  /** TTL keys tracked now, for the next runner. */
  ttlKeysTracked(): string[] | null {
    return this.#keeper?.keys() ?? null;
  }

  /** The highest index that may be stored: applied, and not above an unconfirmed quiet claim. */
  #storable(): number {
    return Math.min(this.#writer?.checkpoint ?? Number.NEGATIVE_INFINITY, this.#confirmed);
  }

  async #run(): Promise<void> {
    const { config, src, dst, map, log, metrics } = this.deps;
    try {
      let from: number;
      if (this.input.mode === 'tail') {
        from = Math.max(this.input.appliedIndex ?? 0, this.resumeFrom ?? 0);
        this.#persisted = from;
        this.#floor = from;
        this.#confirmed = from;
        this.#startWriter(from);
        this.#startUpkeep();
        if (this.ttlKeys) this.#keeper!.seedKeys(this.ttlKeys);
        else {
          // TTL keys refreshed while no mirror was running must be found again: read them from the source (once
          // per process: a restarted runner takes over what the previous one tracked).
          takeSnapshot(src, config.srcPrefix, this.#abort.signal).then(
            (s) => this.#keeper?.seed(s.root),
            (err: unknown) => log.warn({ err }, 'could not read the source to find TTL keys'),
          );
        }
        this.#phase = 'tail';
        log.info({ fromIndex: from + 1 }, 'tailing the source');
        // The synchronous mode has no stream to say where history ends: it replays as the reference does.
        if (config.pipeline) {
          this.#replay = { upTo: null, items: [], releasing: false };
          // After a clean stop the stored index is exactly what was applied: nothing to hold back.
          void stoppedCleanly(this.deps.dst, this.deps.map, this.#abort.signal).then((clean) => {
            if (clean) void this.#releaseReplay(false);
          });
        }
        await this.#poll(from, undefined, (etcdIndex) => {
          // A store index never goes back: below the stored index, SRC is not the cluster it was taken from.
          if (etcdIndex < from) {
            this.#fault(
              new SourceHistoryMismatchError(
                `the source's store index ${etcdIndex} is below the stored replication index ${from}: SRC is another cluster than the one replicated so far, or was restored from a backup; resynchronise with --reload`,
              ),
            );
            return;
          }
          if (this.#replay && this.#replay.upTo === null) {
            this.#replay.upTo = etcdIndex;
            if (etcdIndex <= from) void this.#releaseReplay();
          }
        });
      } else {
        // Register the live watch before reading the snapshot: the catch-up after a long snapshot and reconcile
        // can then never ask for a cleared index. Until the snapshot index is known, what it delivers is held back.
        const started = Date.now();
        this.#held = [];
        let registered!: () => void;
        const isRegistered = new Promise<void>((resolve) => (registered = resolve));
        const polling = this.#poll('now', registered);
        polling.catch(() => {}); // awaited below; a failure before then surfaces through the race
        await Promise.race([isRegistered, polling]);
        from = await this.#reconcileFromSnapshot(started);
        await polling;
      }
    } catch (err) {
      this.#fault(err);
    }
    // Let every started write settle, whatever ended the loop.
    await this.#writer?.idle();
    await this.#lane?.close().catch(() => {});
  }

  /**
   * Takes the source snapshot, queues the reconcile to it as a barrier in the writer and then what the poller held
   * back; returns the snapshot's index. A method of its own: #run stays suspended for the whole run, and a local of
   * it (the snapshot: every key and value of the prefix; the held events) would stay in memory as long.
   */
  async #reconcileFromSnapshot(started: number): Promise<number> {
    const { config, src, dst, map, log, metrics } = this.deps;
    const snapshot = await takeSnapshot(src, config.srcPrefix, this.#abort.signal);
    const from = snapshot.etcdIndex;
    this.#noteSourceIndex(from);
    log.info({ etcdIndex: from, mode: this.input.mode }, 'source snapshot taken; reconciling the destination');
    this.#floor = from;
    this.#startWriter(from - 1);
    this.#startUpkeep();
    this.#keeper!.seed(snapshot.root);
    this.#phase = 'reconcile';
    // The reconcile is a barrier in the writer: live events fetched meanwhile queue up behind it.
    this.#writer!.push({
      index: from,
      op: {
        key: map.dstRoot,
        subtree: true,
        run: async () => {
          const result = await reconcile(snapshot, dst, map, {
            allowMassDelete: config.allowMassDelete,
            massDeleteRatio: config.massDeleteRatio,
            concurrency: config.writeConcurrency * RECONCILE_FANOUT,
            healStats: this.#healStats,
            onProgress: (done, total) => (this.#reconcile = { done, total }),
            nowMs: () => src.serverNow(),
          }, this.#abort.signal);
          const seconds = (Date.now() - started) / 1000;
          metrics.loadTime.observe(seconds);
          metrics.reconcileDuration.set(seconds);
          metrics.reconcileWritten.inc(result.written);
          metrics.reconcileDeleted.inc(result.deleted);
          log.info({ ...result, etcdIndex: from, seconds }, 'destination reconciled to the source snapshot');
          await this.#persist(from);
          this.#phase = 'tail';
          this.#healer?.start();
          this.report({ type: 'runner.reconciled', etcdIndex: from });
        },
      },
    });
    // Events up to the snapshot index are in the snapshot; the rest follow the reconcile in order.
    const held = this.#held ?? [];
    this.#held = null;
    this.#coveredBySnapshot = from;
    for (const item of held) this.#deliver(item);
    return from;
  }

  #poll(fromIndex: number | 'now', registered?: () => void, streamStarted?: (etcdIndex: number) => void): Promise<void> {
    const { config, src, log, metrics } = this.deps;
    return runPoller({
      src,
      prefix: config.srcPrefix,
      fromIndex,
      registered,
      streamStarted,
      signal: this.#abort.signal,
      pipeline: config.pipeline,
      gaps: this.deps.gaps,
      budget: this.deps.budget,
      rearmMaxMs: config.quietRearmMs,
      rearmMinMs: Math.min(15, config.quietRearmMs),
      sink: {
        event: (ev) => this.#deliver({ index: ev.node.modifiedIndex, ev }),
        quiet: (index) => {
          log.debug({ index }, 'quiet watch: no prefix event up to this index');
          this.#deliver({ index });
        },
        confirmed: (index) => {
          this.#confirmed = index;
          this.#schedulePersist();
        },
        sourceIndex: (index) => this.#noteSourceIndex(index),
        room: () => this.#room(),
        poll: (outcome) => metrics.watchPolls.labels({ outcome }).inc(),
      },
    });
  }

  /**
   * Hands what the poller found to the writer. Before the snapshot index is known it is held back; afterwards
   * anything at or below it is already in the snapshot (the poller, registered before the snapshot, may still be
   * catching up through that range).
   */
  #deliver(item: { index: number; ev?: EtcdEvent }): void {
    if (this.#held) {
      this.#held.push(item);
      return;
    }
    if (this.#replay) {
      this.#replay.items.push(item);
      if (this.#replay.upTo !== null && item.index >= this.#replay.upTo) void this.#releaseReplay();
      return;
    }
    if (item.index <= this.#coveredBySnapshot) return;
    if (item.ev) this.#onEvent(item.ev);
    else this.#writer!.push({ index: item.index });
  }

  /** Hands the held replay window to the writer, minus what the destination already shows (when `guard`). */
  async #releaseReplay(guard = true): Promise<void> {
    const replay = this.#replay;
    if (!replay || replay.releasing) return;
    replay.releasing = true;
    if (!guard) {
      this.#replay = null;
      for (const item of replay.items) this.#deliver(item);
      return;
    }
    const { log, metrics } = this.deps;
    const upTo = replay.upTo ?? Number.POSITIVE_INFINITY;
    const window: ReplayItem[] = [];
    for (const { index, ev } of replay.items) {
      if (index > upTo) break;
      window.push(ev ? this.#replayItem(ev) : { index });
    }
    let skip = new Set<number>();
    const keys = keysToRead(window);
    if (keys && keys.length > 0) {
      try {
        skip = alreadyApplied(window, await readCopies(this.deps.dst, keys, this.#abort.signal));
      } catch (err) {
        if (this.#abort.signal.aborted) return;
        log.warn({ err }, 'could not read the destination before the replay; replaying everything');
      }
    }
    if (this.#abort.signal.aborted) return;
    // Everything delivered meanwhile was held too; from now on events go straight to the writer.
    const items = replay.items;
    this.#replay = null;
    for (const item of items) {
      if (item.ev && skip.has(item.index)) this.#onEvent(item.ev, true);
      else this.#deliver(item);
    }
    if (window.length > 0) {
      metrics.eventsSkipped.labels({ reason: 'already applied' }).inc(skip.size);
      log.info({ replayed: window.filter((w) => w.kind).length, alreadyApplied: skip.size, upTo }, 'resumed: events the destination already showed are not applied again');
    }
  }

  #replayItem(ev: EtcdEvent): ReplayItem {
    const { map, src } = this.deps;
    const scope = map.scope(ev.node.key, ev.node.dir === true, ev.action);
    if (scope !== 'mirrored' && scope !== 'ancestor') return { index: ev.node.modifiedIndex };
    const op = planEvent(ev, map, src.serverNow(), scope);
    if (!op) return { index: ev.node.modifiedIndex };
    const leaf = leafOf(ev, op);
    if (leaf?.op.kind === 'put') return { index: ev.node.modifiedIndex, key: leaf.op.key, kind: 'put', value: leaf.op.value, before: leaf.before };
    if (leaf) return { index: ev.node.modifiedIndex, key: leaf.op.key, kind: 'delete', before: leaf.before };
    return { index: ev.node.modifiedIndex, key: op.kind === 'clearRoot' ? map.dstRoot : op.key, kind: 'subtree' };
  }

  /** Backpressure for the poller. Without the pipeline: nothing is fetched until the previous event and the
   * index are written, as the reference tool does. */
  async #room(): Promise<void> {
    const w = this.#writer;
    if (!w) return;
    if (this.deps.config.pipeline) return w.waitForRoom(HIGH_WATER);
    await w.idle();
    if (this.#phase === 'tail' && this.#canPersist(this.#storable())) await this.#persist(this.#storable());
  }

  #startWriter(checkpoint: number): void {
    const { metrics, config, ordering } = this.deps;
    // --ha on v2: no write waits inside the HTTP client, where the fence check before each write cannot see it —
    // after a stop-the-world pause such a write would go out late, behind the new active's.
    const laneDepth = this.deps.fence ? 1 : LANE_DEPTH;
    if (config.pipeline) this.#lane = new StrictLane(this.deps.dst, laneDepth, this.#abort.signal, () => metrics.writeLatency.startTimer());
    this.#writer = new OrderedWriter(checkpoint, {
      concurrency: config.pipeline ? config.writeConcurrency : 1,
      ordering: config.pipeline ? ordering.writerOrdering : 'strict',
      pipelineDepth: laneDepth,
      onReordered: () => metrics.reorderedWrites.inc(),
      onError: (err) => this.#fault(err),
      onCheckpoint: (index) => {
        this.#coverage.prune(index);
        this.#lane?.prune(index);
        this.#schedulePersist();
        for (const [i] of this.#received) {
          if (i > index) break;
          this.#received.delete(i);
        }
        metrics.lastApplyAt = Date.now();
        metrics.lastApply.set(metrics.lastApplyAt / 1000);
      },
    });
  }

  /** TTL keeper and healer: they keep the destination right between events. */
  #startUpkeep(): void {
    const { src, dst, map, log, metrics, own, config } = this.deps;
    this.#healer = new Healer({
      src,
      dst,
      map,
      log,
      metrics,
      own,
      writer: () => this.#writer,
      concurrency: config.writeConcurrency,
      guard: { allowMassDelete: config.allowMassDelete, massDeleteRatio: config.massDeleteRatio },
      covered: (srcKey, index) => this.#coverage.add(srcKey, index),
    });
    // During a reload the destination sees nothing but our own writes: watch it for foreign changes afterwards.
    if (this.input.mode === 'tail') this.#healer.start();
    this.#keeper = new TtlKeeper({
      src,
      dst,
      map,
      log,
      checkpoint: () => this.#writer?.checkpoint ?? 0,
      writer: () => this.#writer,
      onRefresh: () => metrics.ttlRefreshes.inc(),
      onTick: (tracked) => metrics.ttlKeysTracked.set(tracked),
      budget: this.deps.budget,
    });
    this.#keeper.start();
  }

  #noteSourceIndex(index: number): void {
    if (this.#sourceIndex === null || index > this.#sourceIndex) {
      this.#sourceIndex = index;
      this.deps.metrics.sourceIndex.set(index);
      this.#updateOrdering();
    }
  }

  /** Adaptive ordering follows the trend of the stored index's window headroom. Not fed while a restart's replay is
   * held back: nothing is written then, in any order, and the applied index standing still says nothing about the
   * ordered writer's rate. */
  #updateOrdering(): void {
    const { ordering, config } = this.deps;
    const writer = this.#writer;
    if (ordering.mode !== 'adaptive' || !config.pipeline || !writer || this.#replay || this.#persisted === null || this.#sourceIndex === null) return;
    ordering.sample({ source: this.#sourceIndex, applied: writer.checkpoint, stored: this.#persisted, waiting: writer.size });
    writer.setOrdering(ordering.writerOrdering);
  }

  /** `applied`: the destination already shows it (a replay after a restart): tracked, not written again. */
  #onEvent(ev: EtcdEvent, applied = false): void {
    const { map, metrics, dst, src, log } = this.deps;
    const index = ev.node.modifiedIndex;
    const scope = map.scope(ev.node.key, ev.node.dir === true, ev.action);
    if (scope === 'outside' || scope === 'hidden' || scope === 'ignored') {
      metrics.eventsSkipped.labels({ reason: scope }).inc();
      if (scope === 'ignored') metrics.replicatedEvents.inc();
      log.debug({ index, key: ev.node.key, action: ev.action, scope }, 'event skipped');
      this.#writer!.push({ index });
      return;
    }
    this.#keeper?.observe(ev);
    if (this.deps.trackers?.size) {
      const subtree = scope === 'ancestor' || ev.node.dir === true || ev.prevNode?.dir === true;
      for (const t of this.deps.trackers) t.note(scope === 'ancestor' ? map.dstRoot : map.toDst(ev.node.key), index, subtree, true);
    }
    if (applied) {
      this.#writer!.push({ index });
      return;
    }
    const op = planEvent(ev, map, src.serverNow(), scope);
    if (!op) {
      metrics.eventsSkipped.labels({ reason: 'unknown' }).inc();
      log.warn({ index, key: ev.node.key, action: ev.action }, 'unknown action, not replicated');
      this.#writer!.push({ index });
      return;
    }
    const { key, subtree } = opFootprint(op, map);
    const removesSubtree = op.kind === 'delete' || op.kind === 'clearRoot';
    const leaf = leafOf(ev, op);
    this.#received.set(index, Date.now());
    this.#mirroredReceived++;
    this.#eventsSincePersist++;
    const write = async () => {
      await withWriteRetries({ key, index }, async () => {
        const end = metrics.writeLatency.startTimer();
        await executeOp(dst, op, map, this.#healStats);
        end();
      }, {
        signal: this.#abort.signal,
        onRetry: (err, attempt) => {
          metrics.writeRetries.inc();
          log.debug({ err, key, index, attempt }, 'destination write failed; retrying');
        },
      });
    };
    this.#writer!.push({
      index,
      op: {
        key,
        subtree,
        pipelined: leaf !== null && this.#lane !== null,
        run: async (onLane) => {
          // Decided when the op's turn comes: a heal ahead of it may have run meanwhile.
          if (this.#coverage.skip(ev.node.key, index, removesSubtree)) {
            metrics.eventsSkipped.labels({ reason: 'covered' }).inc();
            log.debug({ index, key: ev.node.key }, 'event already in a healed subtree; not replayed');
            return;
          }
          if (onLane && this.#lane && leaf) await this.#lane.apply(leaf.op, index, leaf.before, write);
          else await write();
          metrics.eventsApplied.labels({ action: ev.action }).inc();
          metrics.replicatedEvents.inc();
          log.debug({ index, action: ev.action, key: ev.node.key, dstKey: key }, 'event applied');
        },
      },
    });
  }

  #canPersist(index: number): boolean {
    return index >= this.#floor && (this.#persisted === null || index > this.#persisted);
  }

  #schedulePersist(): void {
    if (this.#stopped || !this.#writer) return;
    // One index write per checkpointMs. When the store races ahead around a quiet prefix (the checkpoint moves by
    // quiet proofs, hardly by events), write sooner, so the stored index never trails by more than a fraction of
    // etcd's 1000-event window; replicated events themselves never cost more than one index write per checkpointMs.
    const behind = this.#storable() - (this.#persisted ?? 0);
    const quietAdvance = behind >= INDEX_LAG_BOUND && this.#eventsSincePersist * 20 < behind;
    const spacing = quietAdvance ? Math.min(FAST_CHECKPOINT_MS, this.deps.config.checkpointMs) : this.deps.config.checkpointMs;
    const due = this.#lastPersistAt + spacing;
    if (this.#timer && this.#timerDue <= due) return;
    clearTimeout(this.#timer);
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#maybePersist();
    }, Math.max(0, due - Date.now()));
  }

  async #maybePersist(): Promise<void> {
    const w = this.#writer;
    if (!w || this.#persisting || this.#faulted || !this.#canPersist(this.#storable())) return;
    try {
      await this.#persist(this.#storable());
    } catch (err) {
      this.#fault(err);
    }
  }

  async #persist(index: number): Promise<void> {
    while (this.#persisting) await this.#persisting.catch(() => {});
    if (!this.#canPersist(index)) return;
    const { dst, map, metrics } = this.deps;
    this.#lastPersistAt = Date.now();
    this.#eventsSincePersist = 0;
    this.#persisting = (async () => {
      await withWriteRetries({ key: map.indexKey, index }, async () => {
        await writeCheckpoint(dst, map.indexKey, index, this.deps.fence);
      }, { signal: this.#stopped ? undefined : this.#abort.signal, onRetry: () => metrics.writeRetries.inc() });
      metrics.indexWrites.inc();
      this.#persisted = index;
      metrics.appliedIndex.set(index);
      this.onPersisted(index);
      this.#updateOrdering();
      if (!this.#stopped) this.report({ type: 'runner.progress', appliedIndex: index, sourceIndex: this.#sourceIndex });
    })();
    try {
      await this.#persisting;
    } finally {
      this.#persisting = null;
      // What became storable while this write was on its way: the timer that fired meanwhile found it busy.
      if (!this.#faulted && this.#canPersist(this.#storable())) this.#schedulePersist();
    }
  }

  #fault(err: unknown): void {
    if (this.#faulted || this.#stopped) return;
    this.#faulted = true;
    const fault = faultFrom(err);
    const { metrics } = this.deps;
    metrics.faults.labels({ code: fault.code }).inc();
    if (err instanceof EventIndexClearedError) metrics.outOfWindow.inc();
    if (err instanceof MassDeleteRefusedError) metrics.massDeleteRefused.inc();
    this.#writer?.halt();
    this.#abort.abort();
    // The stored index is back below a contradicted claim before anyone hears of the fault.
    if (err instanceof ResyncNeededError) void this.#rollBack(err.claimFrom - 1).finally(() => this.report({ type: 'runner.fault', fault }));
    else this.report({ type: 'runner.fault', fault });
  }

  /**
   * A quiet claim was contradicted. Nothing above its start is stored from now on; should the stored index
   * already be past it (a claim confirmed by time, then contradicted after all), it is put back, so that a crash
   * before the resync resumes below the event instead of past it. Replaying from there is idempotent.
   */
  async #rollBack(index: number): Promise<void> {
    this.#confirmed = Math.min(this.#confirmed, index);
    const { dst, map, log } = this.deps;
    this.#rollingBack = (async () => {
      while (this.#persisting) await this.#persisting.catch(() => {}); // an index write already on its way lands first
      if (this.#persisted === null || this.#persisted <= index) return;
      log.warn({ from: this.#persisted, to: index }, 'a quiet proof was contradicted; the stored replication index goes back below it');
      await writeCheckpoint(dst, map.indexKey, index, this.deps.fence);
      this.#persisted = index;
      this.onPersisted(index);
    })().catch((e: unknown) => log.error({ err: e }, 'could not put the stored replication index back'));
    await this.#rollingBack;
  }

  /** Stop fetching, let in-flight writes finish, store the checkpoint. Resolves within about `deadlineMs`. */
  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#phase = 'stopping';
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#healer?.stop();
    await this.#keeper?.stop();
    const deadline = new Promise<void>((r) => setTimeout(r, deadlineMs).unref());
    await Promise.race([this.settled, deadline]);
    if (this.#rollingBack) await Promise.race([this.#rollingBack, deadline]);
    // What is storable only ever covers applied events and confirmed proofs, so it is safe even after a fault.
    const checkpoint = this.#writer ? this.#storable() : undefined;
    if (checkpoint !== undefined && this.#canPersist(checkpoint)) {
      const stored = this.#persist(checkpoint).catch((err: unknown) => this.deps.log.warn({ err }, 'could not store the final replication index'));
      await Promise.race([stored, deadline]);
    }
    this.#phase = 'stopped';
  }
}

/** The v2 destination's runs; TTL keys a tailing run tracked are handed to the next tailing one. */
export class RunnerHost extends RunHost<Runner> {
  #ttlKeys: string[] | null = null;

  constructor(private readonly deps: RunnerDeps) {
    super(deps);
  }

  protected create(input: RunnerInput, resumeFrom: number | null, report: (e: MirrorEvent) => void, onPersisted: (index: number) => void): Runner {
    for (const t of this.deps.trackers ?? []) t.interrupted = true;
    // After a reload/recovery the previous runner's TTL keys may be stale; the snapshot seeds the new one.
    return new Runner(this.deps, input, resumeFrom, report, onPersisted, input.mode === 'tail' ? this.#ttlKeys : null);
  }

  protected override stopped(runner: Runner): void {
    this.#ttlKeys = runner.ttlKeysTracked();
  }

  /** The audit's repairs, through the current run's healer (0 between runs). */
  heal(keys: string[]): Promise<number> {
    return this.current?.heal(keys) ?? Promise.resolve(0);
  }
}
