// The v2 destination's writer: it takes each event's planned operation as data (from destination.ts), asks the
// pure order (order.ts) which write may start — strict source order, or overlapping where keys are unrelated — and
// performs it when its turn comes: the check against subtrees a heal covered meanwhile (coverage.ts), the write
// (strict order's pipelined writes on one ordered connection, the rest through apply.ts executeOp with retries),
// the metrics, and the checkpoint it reports to the pipeline. Heals (barrier) and TTL refreshes (pushKeyed) are
// closures of their own, ordered the same way.
//
// The ordered lane: strict order's one-request writes go to one connection (OrderedLane in src/etcd/v2/client.ts),
// where each is sent the moment the one before it is answered and etcd applies them one after the other. A lane
// write that fails (a dropped connection, a destination that refuses it) may have been applied all the same, and
// so may the writes queued behind it. Every failed write is redone the ordinary way (retries, repairs), one after
// the other in the order the failures came, once nothing is left on the lane, and only if the destination does not
// show it applied — or show a later write to the same key that was sent behind it, which etcd can only have
// applied after it: redoing it then would move the key back. No new write goes on the lane while redos are
// pending, so none overtakes them.
import { executeOp, opFootprint, type ApplyStats, type DstOp, type LeafOp } from './apply.js';
import type { EtcdClient, OrderedLane } from '../../etcd/v2/client.js';
import { KeyNotFoundError, NotADirectoryError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';
import type { Log, ReplicationMetrics } from '../ports.js';
import type { WriterHooks } from '../types.js';
import type { Coverage } from './coverage.js';
import { WriteOrder, type WriteOrdering } from './order.js';
import { withWriteRetries } from './write-retry.js';

/** A mirrored source event's write, as planned (apply.ts planEvent). */
export interface EventWrite {
  op: DstOp;
  /** The op when it writes or removes one key that is no directory before or after (one request: it may go on
   * the lane), with the key's value right before the event (null: it did not exist). */
  leaf: { op: LeafOp; before: string | null } | null;
  /** The event's source key and action (etcd's: set, delete, expire...). */
  srcKey: string;
  action: string;
  /** When the source reader received the event (performance.now()). */
  receivedAt?: number | undefined;
}

export interface WriteItem {
  /** Source modifiedIndex (or proof index). Strictly increasing across pushes. */
  index: number;
  /** Absent for markers: indexes proven to hold nothing to write (other prefixes, ignored keys, quiet watches). */
  event?: EventWrite;
}

export interface LaneStats {
  answered: number;
  busyMs: number;
}

export interface WriterDeps {
  dst: EtcdClient;
  map: KeyMap;
  log: Log;
  metrics: ReplicationMetrics;
  /** Subtrees a heal reconciled to a snapshot ahead of the writer. */
  coverage: Coverage;
  healStats: ApplyStats;
  signal: AbortSignal;
  concurrency: number;
  ordering: WriteOrdering;
  /** How many writes the ordered lane holds behind each other; null: no lane (the synchronous mode). */
  laneDepth: number | null;
  hooks: Pick<WriterHooks, 'applied' | 'failed'>;
}

type Work = { index: number; event: EventWrite } | { run: () => Promise<void> };

export class V2Writer {
  readonly #order: WriteOrder<Work>;
  readonly #lane: StrictLane | null;
  /** Barriers not run yet: refused when the writer halts. */
  readonly #barriers = new Set<(err: unknown) => void>();
  /** Receive time (Date.now()) of events not yet applied, in index order. */
  readonly #received = new Map<number, number>();
  #receivedCount = 0;
  /** When a write last finished (performance.now()): a write that waited for one to start, waited for the
   * destination until then, not for the mirror. */
  #freeSince = 0;
  #idleWaiters: (() => void)[] = [];
  #roomWaiters: { below: number; resolve: () => void }[] = [];

  constructor(
    startIndex: number,
    private readonly deps: WriterDeps,
  ) {
    const { laneDepth } = deps;
    this.#order = new WriteOrder(startIndex, { concurrency: deps.concurrency, ordering: deps.ordering, pipelineDepth: laneDepth ?? 1 });
    this.#lane = laneDepth === null ? null : new StrictLane(deps.dst, laneDepth, deps.signal, () => deps.metrics.writeLatency.startTimer());
  }

  get ordering(): WriteOrdering {
    return this.#order.ordering;
  }
  /** Switches the ordering for writes not started yet. */
  setOrdering(ordering: WriteOrdering): void {
    if (ordering === this.#order.ordering) return;
    this.#order.ordering = ordering;
    this.#pump();
  }
  get checkpoint(): number {
    return this.#order.checkpoint;
  }
  /** Items pushed and not yet retired (events in flight or waiting). */
  get size(): number {
    return this.#order.size;
  }
  get inFlight(): number {
    return this.#order.inFlight;
  }
  get failed(): boolean {
    return this.#order.failed;
  }
  /** Receive time of the oldest event not applied yet (null: none). */
  get oldestUnappliedAt(): number | null {
    const oldest = this.#received.values().next();
    return oldest.done ? null : oldest.value;
  }
  /** Mirrored events pushed that need a write. */
  get received(): number {
    return this.#receivedCount;
  }
  /** The ordered lane's writes answered and busy time (null: no lane). */
  laneStats(): LaneStats | null {
    return this.#lane?.stats() ?? null;
  }

  push(item: WriteItem): void {
    const last = this.#order.lastIndex;
    if (item.index <= last) throw new Error(`writer: index ${item.index} pushed after ${last}`);
    if (!item.event) {
      this.#afterRetire(() => this.#order.add(item.index));
      return;
    }
    this.#received.set(item.index, Date.now());
    this.#receivedCount++;
    const { key, subtree } = opFootprint(item.event.op, this.deps.map);
    this.#order.add(item.index, { key, subtree, pipelined: item.event.leaf !== null && this.#lane !== null }, { index: item.index, event: item.event });
    this.#pump();
  }

  /**
   * Runs `run` with nothing else in flight: after everything pushed so far is applied, before anything pushed
   * later starts; refused (without running) when the writer stops first. It has no source index of its own, so
   * the checkpoint does not move for it.
   */
  barrier<T>(run: () => Promise<T>): Promise<T> {
    if (this.#order.failed) return Promise.reject(new Error('the destination writer has stopped'));
    return new Promise<T>((resolve, reject) => {
      this.#barriers.add(reject);
      // Never fails in the writer: a failed heal must not stop replication.
      this.#order.add(this.#order.lastIndex, { key: '/', subtree: true }, {
        run: async () => {
          if (!this.#barriers.delete(reject)) return;
          await run().then(resolve, reject);
        },
      });
      this.#pump();
    });
  }

  /**
   * A write on one key without a source index of its own (the TTL keeper's refresh): ordered after every earlier
   * write on that key, its ancestors and descendants, before later ones; the checkpoint does not move for it.
   */
  pushKeyed(key: string, run: () => Promise<void>): void {
    this.#order.add(this.#order.lastIndex, { key, subtree: false }, { run });
    this.#pump();
  }

  /** Resolves when fewer than `n` items are unretired (backpressure for the reader), or the writer failed. */
  async waitForRoom(n: number): Promise<void> {
    if (this.size < n || this.failed) return;
    await new Promise<void>((resolve) => this.#roomWaiters.push({ below: n, resolve }));
  }

  /** Resolves when nothing is running (waiting items are not started once the writer has failed). */
  async idle(): Promise<void> {
    if (this.#order.idle) return;
    await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stop starting new work; running writes finish; barriers not run are refused. */
  halt(): void {
    this.#order.halt();
    this.#notify();
    this.#refuseBarriers(new Error('the destination writer has stopped'));
  }

  /** Refuses the barriers not run, lets every started write settle and closes the lane. */
  async close(): Promise<void> {
    this.#refuseBarriers(new Error('the run has ended'));
    await this.idle();
    await this.#lane?.close().catch(() => {});
  }

  #refuseBarriers(err: unknown): void {
    for (const reject of this.#barriers) reject(err);
    this.#barriers.clear();
  }

  /** Runs `change` and reports the checkpoint when it moved. */
  #afterRetire(change: () => void): void {
    const before = this.#order.checkpoint;
    change();
    const index = this.#order.checkpoint;
    if (index !== before) {
      this.deps.coverage.prune(index);
      this.#lane?.prune(index);
      for (const [i] of this.#received) {
        if (i > index) break;
        this.#received.delete(i);
      }
      this.deps.hooks.applied(index);
    }
    this.#notify();
  }

  #pump(): void {
    for (const start of this.#order.next()) {
      if (start.reordered) this.deps.metrics.reorderedWrites.inc();
      const { work } = start;
      const run = 'run' in work ? work.run() : this.#apply(work.index, work.event, start.onLane);
      run.then(
        () => {
          this.#freeSince = performance.now();
          this.#afterRetire(() => this.#order.done(start.seq));
          this.#pump();
          this.#notify();
        },
        (err: unknown) => {
          if (this.#order.fail(start.seq)) {
            const error = err ?? new Error('write failed');
            this.#refuseBarriers(error);
            this.deps.hooks.failed(error);
          }
          this.#notify();
        },
      );
    }
  }

  /** One event's write, at its turn. */
  async #apply(index: number, event: EventWrite, onLane: boolean): Promise<void> {
    const { coverage, metrics, log } = this.deps;
    // Decided when the write's turn comes: a heal ahead of it may have run meanwhile.
    if (coverage.skip(event.srcKey, index, event.op.kind === 'delete' || event.op.kind === 'clearRoot')) {
      metrics.eventsSkipped.labels({ reason: 'covered' }).inc();
      log.debug({ index, key: event.srcKey }, 'event already in a healed subtree; not replayed');
      return;
    }
    if (event.receivedAt !== undefined) {
      const now = performance.now();
      metrics.eventWait.observe((now - event.receivedAt) / 1000);
      metrics.eventOverhead.observe((now - Math.max(event.receivedAt, this.#freeSince)) / 1000);
    }
    const key = opFootprint(event.op, this.deps.map).key;
    const leaf = event.leaf;
    if (onLane && this.#lane && leaf) await this.#lane.apply(leaf.op, index, leaf.before, () => this.#write(index, event.op, key));
    else await this.#write(index, event.op, key);
    metrics.eventsApplied.labels({ action: event.action }).inc();
    metrics.replicatedEvents.inc();
    log.debug({ index, action: event.action, key: event.srcKey, dstKey: key }, 'event applied');
  }

  /** The ordinary write of an op (on destination `key`): its requests (apply.ts), retried. */
  #write(index: number, op: DstOp, key: string): Promise<void> {
    const { dst, map, metrics, log, healStats, signal } = this.deps;
    return withWriteRetries(
      { key, index },
      async () => {
        const end = metrics.writeLatency.startTimer();
        await executeOp(dst, op, map, healStats);
        end();
      },
      {
        signal,
        onRetry: (err, attempt) => {
          metrics.writeRetries.inc();
          log.debug({ err, key, index, attempt }, 'destination write failed; retrying');
        },
      },
    );
  }

  #notify(): void {
    if (this.#roomWaiters.length) {
      const keep: { below: number; resolve: () => void }[] = [];
      for (const w of this.#roomWaiters) (this.size < w.below || this.failed ? w.resolve() : keep.push(w));
      this.#roomWaiters = keep;
    }
    if (this.#order.idle && this.#idleWaiters.length) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

/** Strict order's writes on one connection, and their redos (see the top of this file). */
class StrictLane {
  readonly #lane: OrderedLane;
  /** Redos queued one behind the other; `#redoPending` of them not done. */
  #redos: Promise<void> = Promise.resolve();
  #redoPending = 0;
  /** Lane requests sent and not answered yet (undici fails the queued ones too when the connection drops). */
  #inFlight = 0;
  #drainWaiters: (() => void)[] = [];
  /** Time with at least one write on the lane, and the writes answered: their ratio is the rate the lane carries
   * while it is kept busy (the ordered ceiling at the destination's current write latency), whatever the load. */
  #busyMs = 0;
  #busySince = 0;
  #answered = 0;
  /** Lane writes sent, per destination key (index, outcome; null: deleted), until the checkpoint passes them. */
  readonly #sent = new Map<string, { index: number; outcome: string | null }[]>();

  constructor(
    private readonly dst: EtcdClient,
    depth: number,
    private readonly signal: AbortSignal,
    private readonly onLatency: () => () => void,
  ) {
    this.#lane = dst.orderedLane(depth);
  }

  /** Applies `op` (the event at `index`; `before`: the key's value right before it, null: absent); `redo`: the
   * ordinary write, for a lane write that failed and does not show applied. */
  async apply(op: LeafOp, index: number, before: string | null, redo: () => Promise<void>): Promise<void> {
    while (this.#redoPending > 0) await this.#redos;
    if (await this.#send(op, index)) return;
    this.#redoPending++;
    const redone = this.#redos.then(async () => {
      try {
        await this.#drained();
        if (!(await this.#applied(op, index, before))) await redo();
      } finally {
        this.#redoPending--;
      }
    });
    this.#redos = redone.catch(() => {});
    await redone;
  }

  /** Forgets lane writes the checkpoint has passed: everything before them is settled. */
  prune(checkpoint: number): void {
    if (this.#sent.size === 0) return;
    for (const [key, sent] of this.#sent) {
      let n = 0;
      while (n < sent.length && sent[n]!.index <= checkpoint) n++;
      if (n === sent.length) this.#sent.delete(key);
      else if (n > 0) sent.splice(0, n);
    }
  }

  close(): Promise<void> {
    return this.#lane.close();
  }

  stats(): LaneStats {
    return { answered: this.#answered, busyMs: this.#busyMs + (this.#inFlight > 0 ? performance.now() - this.#busySince : 0) };
  }

  /** One write on the lane; false when it failed. */
  async #send(op: LeafOp, index: number): Promise<boolean> {
    const entry = { index, outcome: op.kind === 'put' ? op.value : null };
    const sent = this.#sent.get(op.key);
    if (sent) sent.push(entry);
    else this.#sent.set(op.key, [entry]);
    const end = this.onLatency();
    if (this.#inFlight++ === 0) this.#busySince = performance.now();
    try {
      if (op.kind === 'put') await this.#lane.put(op.key, { value: op.value, ttl: op.ttl, signal: this.signal });
      else await this.#lane.delete(op.key, { signal: this.signal });
    } catch (err) {
      // A delete whose key is gone already reached its goal.
      if (!(op.kind === 'delete' && (err instanceof KeyNotFoundError || err instanceof NotADirectoryError))) return false;
    } finally {
      if (--this.#inFlight === 0) {
        this.#busyMs += performance.now() - this.#busySince;
        for (const w of this.#drainWaiters.splice(0)) w();
      }
    }
    end();
    this.#answered++;
    return true;
  }

  #drained(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Whether a lane write that failed was applied after all (see the top of this file). */
  async #applied(op: LeafOp, index: number, before: string | null): Promise<boolean> {
    let have: string | null;
    try {
      const node = (await this.dst.get(op.key, { signal: this.signal })).body.node;
      if (node.dir) return false;
      have = node.value ?? '';
    } catch (err) {
      if (!(err instanceof KeyNotFoundError)) return false;
      have = null;
    }
    if (have === before) return false; // the key's state before the event proves nothing
    const own = op.kind === 'put' ? op.value : null;
    return have === own || (this.#sent.get(op.key) ?? []).some((e) => e.index > index && e.outcome === have);
  }
}
