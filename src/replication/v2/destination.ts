// A v2 cluster as the replication destination, behind the pipeline (../pipeline.ts). v2 has no multi-key write,
// so each source event is replayed as one or a few requests: planned here as an idempotent operation (apply.ts)
// and handed as data to the writer (writer.ts), which orders it (order.ts: one at a time, or overlapping where
// keys are unrelated for --ordering key and adaptive's overlap; strict order on one connection) and writes it.
// The checkpoint is a write of its own, which the pipeline times (with --ha a compare-and-swap on this instance's
// own previous write). Around the writes: the replay guard after a restart (replay-guard.ts), heals of foreign
// changes (healer.ts), TTL keeping (ttl-keeper.ts) and the reconcile to a snapshot (reconcile.ts).
import { leafOf, planEvent, type ApplyStats } from './apply.js';
import type { EtcdClient } from '../../etcd/v2/client.js';
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { putCheckpoint, readCheckpoint } from './checkpoint.js';
import type { V2Fence } from '../ha-lock.js';
import type { KeyMap } from '../keys.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from '../ports.js';
import type { OrderingPolicy } from './ordering.js';
import type { SourceBudget } from './source-budget.js';
import { reconcile, takeSnapshot } from './reconcile.js';
import { Coverage } from './coverage.js';
import { Healer, MAX_KEYS_PER_BATCH, topMost } from './healer.js';
import type { OwnWrites } from '../own-writes.js';
import { TtlKeeper } from './ttl-keeper.js';
import { withWriteRetries } from './write-retry.js';
import { replayItemOf, ReplayHold, skipsFor, stoppedCleanly } from './replay-guard.js';
import { V2Writer } from './writer.js';
import type { ChangeTracker } from '../audit.js';
import type { Destination, DestinationRun, HealItem, HealOutcome, RunContext, SourceMessage, SourceSnapshot, WriterHooks, WriterStatus } from '../types.js';

export interface V2TargetDeps {
  config: ReplicationOptions;
  /** The source, read by heals and the TTL keeper (v2 reads only the present). */
  src: EtcdClient;
  dst: EtcdClient;
  map: KeyMap;
  log: Log;
  metrics: ReplicationMetrics;
  /** The destination client's own writes, to tell them from foreign changes. */
  own: OwnWrites;
  /** --ordering, with the adaptive mode's state: kept across runs. */
  ordering: OrderingPolicy;
  /** --ha: checkpoint writes are compare-and-swaps (every write also passes the fence check in the destination
   * client's write hook, see src/replication/v2-backend.ts). */
  fence?: V2Fence | undefined;
  /** An expensive source's request budget (TTL re-reads). */
  budget?: SourceBudget | undefined;
  /** Audits in progress: told of every source change handed to the writer (src/replication/audit.ts). */
  trackers?: Set<ChangeTracker>;
}

/** A reconcile writes independent keys (parents first): it can use more connections than event replay. */
const RECONCILE_FANOUT = 4;

/** Strict order: writes queued on the ordered lane. It saves the event-loop turn between two writes (measured on
 * the bench machine: a backlog replayed at ~2,900 events/s this way, ~2,000 one write at a time). */
const LANE_DEPTH = 8;

/** A v2 destination: the checkpoint is a separate write, after the writes it covers. */
export class V2Target implements Destination {
  readonly checkpointStyle = 'separate';
  /** TTL keys the last run tracked, for the next tailing one (null: read them from the source). */
  #ttlKeys: string[] | null = null;
  #run: V2Run | null = null;

  constructor(private readonly deps: V2TargetDeps) {}

  readCheckpoint(): Promise<number | null> {
    return readCheckpoint(this.deps.dst, this.deps.map.indexKey, this.deps.fence);
  }

  open(ctx: RunContext): DestinationRun {
    // After a reload/recovery the previous run's TTL keys may be stale; the snapshot seeds the new one.
    const run = new V2Run(this.deps, ctx, ctx.mode === 'tail' ? this.#ttlKeys : null, (keys) => {
      this.#ttlKeys = keys;
      // A run that has ended no longer feeds adaptive ordering.
      if (this.#run === run) this.#run = null;
    });
    this.#run = run;
    return run;
  }

  /** Each source store index seen: adaptive ordering follows the window headroom's trend. */
  sourceIndexSeen(index: number): void {
    this.#run?.noteSourceIndex(index);
  }
}

type Held = { index: number; ev?: EtcdEvent; receivedAt?: number };

class V2Run implements DestinationRun {
  #writer: V2Writer | null = null;
  readonly #keeper: TtlKeeper;
  readonly #healer: Healer;
  /** Tail mode: what arrived up to the source's store index at the start, held back until the destination has
   * said which of it is already applied (replay-guard.ts). */
  #replay: ReplayHold<Held> | null = null;
  #from = 0;
  #hooks: WriterHooks | null = null;
  /** Highest index handed to the writer. */
  #last = Number.NEGATIVE_INFINITY;
  #sourceIndex: number | null = null;
  /** Subtrees a heal reconciled to a snapshot ahead of the writer. */
  readonly #coverage = new Coverage();
  readonly #healStats: ApplyStats;

  constructor(
    private readonly deps: V2TargetDeps,
    private readonly ctx: RunContext,
    /** TTL keys the previous run tracked (null: read them from the source). */
    private readonly ttlKeys: string[] | null,
    private readonly onClosed: (ttlKeys: string[]) => void,
  ) {
    const { src, dst, map, log, metrics, own, config } = deps;
    this.#healStats = {
      onHealed: (reason, key) => {
        metrics.healed.labels({ reason }).inc();
        log.warn({ key, reason }, 'destination diverged from the source; repaired');
      },
    };
    this.#healer = new Healer({
      src,
      dst,
      map,
      log,
      metrics,
      own,
      foreign: (keys) => ctx.foreign(keys.map((k) => Buffer.from(k))),
      concurrency: config.writeConcurrency,
      guard: { allowMassDelete: config.allowMassDelete, massDeleteRatio: config.massDeleteRatio },
      covered: (srcKey, index) => this.#coverage.add(srcKey, index),
    });
    this.#keeper = new TtlKeeper({
      src,
      dst,
      map,
      log,
      checkpoint: () => this.#writer?.checkpoint ?? 0,
      writer: () => this.#writer,
      onRefresh: () => metrics.ttlRefreshes.inc(),
      onTick: (tracked) => metrics.ttlKeysTracked.set(tracked),
      budget: deps.budget,
    });
  }

  async resume(): Promise<void> {
    const { config, src, log } = this.deps;
    if (this.ttlKeys) this.#keeper.seedKeys(this.ttlKeys);
    else {
      // TTL keys refreshed while no mirror was running must be found again: read them from the source (once per
      // process: a later run takes over what the previous one tracked).
      takeSnapshot(src, config.srcPrefix, this.ctx.signal).then(
        (s) => this.#keeper.seed(s.root),
        (err: unknown) => log.warn({ err }, 'could not read the source to find TTL keys'),
      );
    }
    this.#keeper.start();
    // The synchronous mode has no stream to say where history ends: it replays as the reference does.
    if (config.pipeline) {
      this.#replay = new ReplayHold();
      // After a clean stop the stored index is exactly what was applied: nothing to hold back.
      void stoppedCleanly(this.deps.dst, this.deps.map, this.ctx.signal).then((clean) => {
        if (clean) void this.#releaseReplay(false);
      });
    }
  }

  async reconcile(snapshot: SourceSnapshot, onProgress: (done: number, total: number) => void) {
    const { config, src, dst, map } = this.deps;
    // reconcile() lets go of the tree once planned, so a large snapshot can be collected while the writes run:
    // nothing else may hold it meanwhile.
    const tree = { etcdIndex: snapshot.revision, root: snapshot.v2Tree ?? null };
    snapshot.v2Tree = null;
    this.#keeper.seed(tree.root);
    this.#keeper.start();
    return reconcile(
      tree,
      dst,
      map,
      {
        allowMassDelete: config.allowMassDelete,
        massDeleteRatio: config.massDeleteRatio,
        concurrency: config.writeConcurrency * RECONCILE_FANOUT,
        healStats: this.#healStats,
        onProgress,
        nowMs: () => src.serverNow(),
      },
      this.ctx.signal,
    );
  }

  start(from: number, hooks: WriterHooks): void {
    const { dst, map, log, metrics, config, ordering } = this.deps;
    this.#from = from;
    this.#last = from;
    this.#hooks = hooks;
    this.#writer = new V2Writer(from, {
      dst,
      map,
      log,
      metrics,
      coverage: this.#coverage,
      healStats: this.#healStats,
      signal: this.ctx.signal,
      concurrency: config.pipeline ? config.writeConcurrency : 1,
      ordering: config.pipeline ? ordering.writerOrdering : 'strict',
      // --ha on v2: no write waits inside the HTTP client, where the fence check before each write cannot see it —
      // after a stop-the-world pause such a write would go out late, behind the new active's.
      laneDepth: config.pipeline ? (this.deps.fence ? 1 : LANE_DEPTH) : null,
      hooks,
    });
    // During a reload the destination sees nothing but our own writes: it is watched for foreign changes from now.
    this.#healer.start();
  }

  push(msg: SourceMessage): void {
    if (msg.kind === 'registered') return;
    if (msg.kind === 'live') {
      if (this.#replay?.live(msg.revision, this.#from)) void this.#releaseReplay();
      return;
    }
    const item: Held = msg.kind === 'change' ? { index: msg.change.revision, ...(msg.change.event ? { ev: msg.change.event, receivedAt: msg.change.receivedAt } : {}) } : { index: msg.revision };
    if (this.#replay) {
      if (this.#replay.hold(item)) void this.#releaseReplay();
      return;
    }
    this.#deliver(item);
  }

  #deliver(item: Held): void {
    // A proof is confirmed after the events that followed it arrived: the writer is past it already, but the
    // pipeline is told again, since what may be stored can have moved with the confirmation.
    if (item.index <= this.#last) {
      if (this.#writer && this.#writer.size === 0) this.#hooks?.applied(this.#writer.checkpoint);
      return;
    }
    this.#last = item.index;
    if (item.ev) this.#onEvent(item.ev, false, item.receivedAt);
    else this.#writer!.push({ index: item.index });
  }

  /** Hands the held replay window to the writer, minus what the destination already shows (when `guard`). */
  async #releaseReplay(guard = true): Promise<void> {
    const replay = this.#replay;
    if (!replay?.begin()) return;
    if (!guard) {
      this.#replay = null;
      for (const item of replay.items) this.#deliver(item);
      return;
    }
    const { dst, map, src, log, metrics } = this.deps;
    const signal = this.ctx.signal;
    const upTo = replay.upTo ?? Number.POSITIVE_INFINITY;
    const window = replay.window().map(({ index, ev }) => (ev ? replayItemOf(ev, map, src.serverNow()) : { index }));
    const skip = await skipsFor(dst, window, signal, log);
    if (signal.aborted) return;
    // Everything delivered meanwhile was held too; from now on events go straight to the writer.
    this.#replay = null;
    for (const item of replay.items) {
      if (item.ev && skip.has(item.index) && item.index > this.#last) {
        this.#last = item.index;
        this.#onEvent(item.ev, true, item.receivedAt);
      } else this.#deliver(item);
    }
    if (window.length > 0) {
      metrics.eventsSkipped.labels({ reason: 'already applied' }).inc(skip.size);
      log.info({ replayed: window.filter((w) => w.kind).length, alreadyApplied: skip.size, upTo }, 'resumed: events the destination already showed are not applied again');
    }
  }

  /** `applied`: the destination already shows it (a replay after a restart): tracked, not written again. */
  #onEvent(ev: EtcdEvent, applied = false, receivedAt?: number): void {
    const { map, src } = this.deps;
    const writer = this.#writer!;
    const index = ev.node.modifiedIndex;
    const scope = map.scope(ev.node.key, ev.node.dir === true, ev.action);
    if (scope !== 'mirrored' && scope !== 'ancestor') {
      writer.push({ index });
      return;
    }
    this.#keeper.observe(ev);
    if (this.deps.trackers?.size) {
      const subtree = scope === 'ancestor' || ev.node.dir === true || ev.prevNode?.dir === true;
      for (const t of this.deps.trackers) t.note(scope === 'ancestor' ? map.dstRoot : map.toDst(ev.node.key), index, subtree, true);
    }
    const op = applied ? null : planEvent(ev, map, src.serverNow(), scope);
    if (!op) {
      writer.push({ index });
      return;
    }
    writer.push({ index, event: { op, leaf: leafOf(ev, op), srcKey: ev.node.key, action: ev.action, receivedAt } });
  }

  noteSourceIndex(index: number): void {
    if (this.#sourceIndex === null || index > this.#sourceIndex) {
      this.#sourceIndex = index;
      this.#updateOrdering();
    }
  }

  stored(): void {
    this.#updateOrdering();
  }

  /** Adaptive ordering follows the trend of the stored index's window headroom. Not fed while a restart's replay is
   * held back: nothing is written then, in any order, and the applied index standing still says nothing about the
   * ordered writer's rate. */
  #updateOrdering(): void {
    const { ordering, config } = this.deps;
    const writer = this.#writer;
    const stored = this.ctx.stored();
    if (ordering.mode !== 'adaptive' || !config.pipeline || !writer || this.#replay || stored === null || this.#sourceIndex === null) return;
    ordering.sample({ source: this.#sourceIndex, applied: writer.checkpoint, stored, waiting: writer.size });
    writer.setOrdering(ordering.writerOrdering);
  }

  waitForRoom(n: number): Promise<void> {
    return this.#writer?.waitForRoom(n) ?? Promise.resolve();
  }

  idle(): Promise<void> {
    return this.#writer?.idle() ?? Promise.resolve();
  }

  barrier<T>(run: () => Promise<T>): Promise<T> {
    return this.#writer?.barrier(run) ?? Promise.reject(new Error('the destination writer has stopped'));
  }

  halt(): void {
    this.#writer?.halt();
  }

  /** Reconciles each top-most subtree of the items to the source (v2 reads only the present: no retries). */
  async heal(items: HealItem[]): Promise<HealOutcome> {
    const { map, log } = this.deps;
    const outcome: HealOutcome = new Map();
    const byKey = new Map(items.map((h) => [h.key.toString('utf8'), h]));
    let top = topMost(byKey.keys());
    if (top.length > MAX_KEYS_PER_BATCH) top = [map.dstRoot];
    for (const key of top) {
      const item = byKey.get(key);
      let repaired = 0;
      try {
        repaired = await this.#healer.heal(key, item?.audit ? 'audit' : 'foreign change');
      } catch (err) {
        // A failed heal must not stop replication; the key is healed when it changes next, or by a reload.
        if (!this.ctx.signal.aborted) log.warn({ err, key }, 'could not heal a destination key');
      }
      // The count goes to one item under the subtree; every item is done.
      const first = item ?? items.find((h) => h.key.toString('utf8').startsWith(key === '/' ? '/' : key + '/'));
      if (first) outcome.set(first.id, { written: repaired });
    }
    for (const h of items) if (!outcome.has(h.id)) outcome.set(h.id, { written: 0 });
    return outcome;
  }

  async writeCheckpoint(revision: number, signal?: AbortSignal): Promise<void> {
    const { dst, map, metrics, fence } = this.deps;
    await withWriteRetries({ key: map.indexKey, index: revision }, () => putCheckpoint(dst, map.indexKey, revision, fence), {
      signal,
      onRetry: () => metrics.writeRetries.inc(),
    });
  }

  status(): WriterStatus {
    const writer = this.#writer;
    return {
      queue: writer?.size ?? 0,
      inFlight: writer?.inFlight ?? 0,
      oldestUnappliedAt: writer?.oldestUnappliedAt ?? null,
      ordering: writer?.ordering ?? this.deps.ordering.writerOrdering,
      lane: writer?.laneStats() ?? null,
      received: writer?.received ?? 0,
    };
  }

  async close(): Promise<void> {
    this.#healer.stop();
    await this.#keeper.stop();
    this.onClosed(this.#keeper.keys());
    // Let every started write settle, whatever ended the run.
    await this.#writer?.close();
  }
}
