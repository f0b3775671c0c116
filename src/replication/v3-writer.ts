// The v3 destination's side of the pipeline (./pipeline.ts): changes are queued as the pipeline hands them over
// and one writer applies them in source order, as Txns that each carry whole revisions — as many as fit the
// destination's operation limit — and the checkpoint after them. One Txn in flight at a time: two could be
// applied by the destination in either order. Around it: the reconcile to a snapshot (resync.ts), heals between
// two Txns, the destination watch for foreign changes (dst-watch.ts) and the lease mirror (leases.ts).
//
// Batching: etcd refuses a Txn that writes one key twice or puts a key a range delete of the same Txn covers
// ("duplicate key given in txn request"), and it need not: the Txn is one destination revision, so only the state
// after its last source revision is ever visible. A later write of a key replaces an earlier one; a range delete
// that overlaps anything already in the batch starts a new Txn.
import { TooManyOpsError } from '../etcd/v3/errors.js';
import { subtreeRanges, type DstWrite, type V3Destination } from './v3-destination.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from './ports.js';
import { DestinationWatch } from './dst-watch.js';
import { keyId, type ByteKeyMap } from './keyspace.js';
import type { LeaseMirror } from './leases.js';
import type { OwnWrites } from './own-writes.js';
import { resync } from './resync.js';
import type { ChangeTracker } from './audit.js';
import type { Change, Destination, DestinationRun, HealItem, HealOutcome, LeaseRef, RunContext, SourceMessage, SourceSnapshot, WriterHooks, WriterStatus } from './types.js';

const inRange = (key: Buffer, w: { key: Buffer; rangeEnd: Buffer }): boolean => key.compare(w.key) >= 0 && key.compare(w.rangeEnd) < 0;
const rangesOverlap = (a: { key: Buffer; rangeEnd: Buffer }, b: { key: Buffer; rangeEnd: Buffer }): boolean =>
  a.key.compare(b.rangeEnd) < 0 && b.key.compare(a.rangeEnd) < 0;

/** Whole revisions for one Txn (see the top of this file). */
export class TxnBatch {
  /** Single-key writes by key (a Map keeps first-insertion order; a replaced key keeps its slot). */
  readonly #single = new Map<string, DstWrite>();
  readonly #ranges: { key: Buffer; rangeEnd: Buffer }[] = [];

  constructor(private readonly maxOps: number) {}

  get size(): number {
    return this.#single.size + this.#ranges.length;
  }

  /**
   * Adds one change's writes when they fit (with one op left for the checkpoint) and conflict with no range;
   * returns false and leaves the batch as it was otherwise.
   */
  tryAdd(writes: DstWrite[]): boolean {
    let added = 0;
    const ranges: { key: Buffer; rangeEnd: Buffer }[] = [];
    for (const w of writes) {
      if (w.kind === 'delete' && w.rangeEnd) {
        const r = { key: w.key, rangeEnd: w.rangeEnd };
        if (this.#ranges.some((x) => rangesOverlap(x, r))) return false;
        for (const k of this.#single.values()) if (inRange(k.key, r)) return false;
        ranges.push(r);
        added++;
      } else {
        if (this.#ranges.some((r) => inRange(w.key, r))) return false;
        if (!this.#single.has(keyId(w.key))) added++;
      }
    }
    if (this.size + added + 1 > this.maxOps) return false;
    for (const w of writes) {
      if (w.kind === 'delete' && w.rangeEnd) continue;
      const id = keyId(w.key);
      this.#single.delete(id); // the later write goes after everything before it
      this.#single.set(id, w);
    }
    this.#ranges.push(...ranges);
    return true;
  }

  writes(): DstWrite[] {
    return [...this.#ranges.map((r): DstWrite => ({ kind: 'delete', key: r.key, rangeEnd: r.rangeEnd })), ...this.#single.values()];
  }
}

/**
 * A source revision with more operations than one Txn may carry (a range delete of 300 keys): one range delete
 * when the deleted keys are all the destination holds between the first and the last of them; otherwise it is
 * split over several Txns — logged and counted, since the destination then shows part of a revision.
 */
async function oversizeRevision(
  { dst, log, metrics }: { dst: V3Destination; log: Log; metrics: Pick<ReplicationMetrics, 'rangeDeletes' | 'splitRevisions'> },
  change: Change,
  writes: DstWrite[],
): Promise<DstWrite[]> {
  if (writes.every((w) => w.kind === 'delete' && !w.rangeEnd)) {
    const sorted = writes.map((w) => w.key).sort(Buffer.compare);
    const first = sorted[0]!;
    const last = sorted[sorted.length - 1]!;
    const deleting = new Set(sorted.map(keyId));
    const present = await dst.keysBetween(first, last);
    if (present.every((k) => deleting.has(keyId(k)))) {
      metrics.rangeDeletes.inc();
      return [{ kind: 'delete', key: first, rangeEnd: Buffer.concat([last, Buffer.from([0])]) }];
    }
  }
  const per = dst.maxOps - 1;
  metrics.splitRevisions.inc();
  log.warn(
    { revision: change.revision, operations: writes.length, maxTxnOps: dst.maxOps, txns: Math.ceil(writes.length / per) },
    'a source revision has more operations than a destination Txn may carry: it is applied in several Txns (the destination shows part of it in between)',
  );
  let i = 0;
  for (; i + per < writes.length; i += per) await dst.commit(writes.slice(i, i + per), null);
  return writes.slice(i);
}


export interface V3TargetDeps {
  config: ReplicationOptions;
  dst: V3Destination;
  keys: ByteKeyMap;
  leases: LeaseMirror;
  log: Log;
  metrics: ReplicationMetrics;
  /** The source lease a destination key's lease stands for (adopting leases after a restart). */
  leaseFor(dstKey: Buffer, dstLease: string): LeaseRef;
  /** Our destination writes (Txns), to tell foreign changes from them. */
  own: OwnWrites;
  /** Audits in progress: told of every source change handed over (src/replication/audit.ts). */
  trackers?: Set<ChangeTracker>;
}

/** A v3 destination: the checkpoint travels in the Txn of the writes it covers. */
export class V3Target implements Destination {
  readonly checkpointStyle = 'txn';

  constructor(private readonly deps: V3TargetDeps) {}

  readCheckpoint(): Promise<number | null> {
    return this.deps.dst.readCheckpoint();
  }

  open(ctx: RunContext): DestinationRun {
    this.deps.leases.start();
    return new V3Run(this.deps, ctx);
  }

  // No lease keepalives between runs (nor from a standby: --ha).
  pause(): void {
    this.deps.leases.stop();
  }
}

interface Queued {
  msg: SourceMessage;
  at: number;
  /** The change's destination writes, planned once (leases granted). */
  writes?: DstWrite[];
}

class V3Run implements DestinationRun {
  readonly #queue: Queued[] = [];
  readonly #barriers: (() => Promise<void>)[] = [];
  #applied = 0;
  #inFlight = 0;
  /** When the writer last became free to send (its previous Txn or barrier done): an event that arrived before
   * waited for the destination, not for the mirror, until then. */
  #freeSince = 0;
  #halted = false;
  #hooks: WriterHooks | null = null;
  #writing: Promise<void> = Promise.resolve();
  #wakeWriter: (() => void) | null = null;
  #waiters: (() => void)[] = [];
  #watch: DestinationWatch | null = null;

  constructor(
    private readonly deps: V3TargetDeps,
    private readonly ctx: RunContext,
  ) {}

  /** Watches the destination for foreign changes from its revision now on. */
  async #watchDestination(): Promise<void> {
    if (this.#watch) return;
    const { dst, keys, own, log } = this.deps;
    this.#watch = new DestinationWatch(dst.client, keys, own, log, (k) => this.ctx.foreign(k));
    this.#watch.start((await dst.client.status()).revision + 1);
  }

  /** After a restart: copies already on destination leases are kept alive from now on, as if just written. */
  async resume(): Promise<void> {
    await this.#watchDestination();
    const { dst, leases, leaseFor, log } = this.deps;
    if (leases.seeded) return;
    let adopted = 0;
    for (const entry of (await dst.readTree()).values()) {
      if (!entry.lease || entry.lease === '0') continue;
      leases.adopt(leaseFor(entry.key, entry.lease), entry.lease);
      adopted++;
    }
    leases.seeded = true;
    if (adopted > 0) log.info({ keys: adopted, leases: leases.size }, 'destination copies on leases found; their source leases are followed again');
  }

  async reconcile(snapshot: SourceSnapshot, onProgress: (done: number, total: number) => void) {
    await this.#watchDestination();
    const { config, dst, keys, leases } = this.deps;
    return resync({ dst, keys, leases, guard: { allowMassDelete: config.allowMassDelete, massDeleteRatio: config.massDeleteRatio } }, snapshot, onProgress, this.ctx.signal);
  }

  start(from: number, hooks: WriterHooks): void {
    this.#applied = from;
    this.#hooks = hooks;
    this.#writing = this.#writeLoop().catch((err: unknown) => {
      this.#halted = true;
      this.#notify();
      hooks.failed(err);
    });
  }

  push(msg: SourceMessage): void {
    if (msg.kind !== 'change' && msg.kind !== 'progress') return;
    const trackers = this.deps.trackers;
    if (msg.kind === 'change' && trackers?.size) {
      for (const op of msg.change.ops) for (const t of trackers) t.note(keyId(this.deps.keys.toDst(op.key)), msg.change.revision, op.kind === 'deleteTree');
    }
    this.#queue.push({ msg, at: Date.now() });
    this.#wake();
  }

  waitForRoom(n: number): Promise<void> {
    return this.#until(() => this.#queue.length < n);
  }

  idle(): Promise<void> {
    return this.#until(() => this.#queue.length === 0 && this.#inFlight === 0 && this.#barriers.length === 0);
  }

  barrier<T>(run: () => Promise<T>): Promise<T> {
    if (this.#halted) return Promise.reject(new Error('the destination writer has stopped'));
    return new Promise<T>((resolve, reject) => {
      this.#barriers.push(() => run().then(resolve, reject));
      this.#wake();
    });
  }

  halt(): void {
    this.#halted = true;
    this.#wake();
    this.#notify();
  }

  /**
   * Restores keys someone else changed on the destination to the source's state at the revision the destination
   * is at, in one Txn between two batches: the replica stays a state the source had, and no replayed event
   * is in flight meanwhile.
   */
  async heal(items: HealItem[], at: number): Promise<HealOutcome> {
    const { dst, keys, leases, log, metrics } = this.deps;
    const outcome: HealOutcome = new Map();
    const writes: DstWrite[] = [];
    for (const h of items) {
      if (writes.length + 1 >= dst.maxOps) {
        outcome.set(h.id, { retryAt: at }); // the next heal, right after this one
        continue;
      }
      try {
        const state = await this.ctx.source.keyAt(keys.toSrc(h.key), at, this.ctx.signal);
        if ('retryAt' in state) {
          outcome.set(h.id, { retryAt: state.retryAt });
          continue;
        }
        if ('superseded' in state) {
          outcome.set(h.id, { written: 0 });
          continue;
        }
        const e = state.entry;
        const lease = e?.lease ? await leases.attach(e.lease) : undefined;
        writes.push(e ? { kind: 'put', key: h.key, value: e.value, ...(lease ? { lease } : {}) } : { kind: 'delete', key: h.key });
        metrics.healed.labels({ reason: h.audit ? 'audit' : e ? 'foreign change' : 'foreign create' }).inc();
        outcome.set(h.id, { written: 1 });
      } catch (err) {
        outcome.set(h.id, { written: 0 });
        log.warn({ err, key: h.key.toString('utf8') }, 'could not read the source to heal a destination key; it is healed when the source changes it');
      }
    }
    if (writes.length > 0) {
      await dst.commit(writes, null);
      log.warn({ keys: writes.map((w) => w.key.toString('utf8')).slice(0, 20), count: writes.length, atRevision: at }, 'destination keys changed by someone else were restored to the source');
    }
    return outcome;
  }

  async writeCheckpoint(revision: number): Promise<void> {
    await this.deps.dst.commit([], revision);
  }

  status(): WriterStatus {
    const first = this.#queue.find((q) => q.msg.kind === 'change');
    return { queue: this.#queue.length, inFlight: this.#inFlight, oldestUnappliedAt: first?.at ?? null, ordering: 'strict' };
  }

  async close(): Promise<void> {
    this.#watch?.stop();
    this.halt();
    await this.#writing;
  }

  #until(done: () => boolean): Promise<void> {
    if (done() || this.#halted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const check = () => {
        if (done() || this.#halted) resolve();
        else this.#waiters.push(check);
      };
      this.#waiters.push(check);
    });
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #wake(): void {
    const w = this.#wakeWriter;
    this.#wakeWriter = null;
    w?.();
  }

  #sleep(ms?: number): Promise<void> {
    return new Promise<void>((r) => {
      const timer = ms === undefined ? undefined : setTimeout(r, ms);
      this.#wakeWriter = () => {
        clearTimeout(timer);
        r();
      };
    });
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

  async #writeLoop(): Promise<void> {
    const { dst, metrics, log } = this.deps;
    const hooks = this.#hooks!;
    while (!this.#halted) {
      const barrier = this.#barriers.shift();
      if (barrier) {
        await barrier();
        this.#freeSince = performance.now();
        this.#notify();
        continue;
      }
      if (this.#queue.length === 0) {
        this.#notify();
        await this.#sleep();
        continue;
      }
      const batch = new TxnBatch(dst.maxOps);
      let writes: DstWrite[] | null = null;
      let taken = 0;
      let upTo = this.#applied;
      for (const q of this.#queue) {
        if (q.msg.kind === 'progress') {
          upTo = Math.max(upTo, q.msg.revision);
          taken++;
          continue;
        }
        if (q.msg.kind !== 'change') continue;
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
      const { checkpoint, waitMs } = hooks.checkpointFor(upTo);
      // Proofs of progress alone: the checkpoint follows them at most every --checkpoint-ms.
      if (writes.length === 0 && checkpoint !== null && waitMs > 0) {
        await this.#sleep(waitMs);
        continue;
      }
      const started = performance.now();
      for (let i = 0; i < taken; i++) {
        const m = this.#queue[i]!.msg;
        if (m.kind !== 'change' || m.change.receivedAt === undefined) continue;
        metrics.eventWait.observe((started - m.change.receivedAt) / 1000);
        metrics.eventOverhead.observe((started - Math.max(m.change.receivedAt, this.#freeSince)) / 1000);
      }
      this.#inFlight = 1;
      try {
        if (writes.length > 0 || checkpoint !== null) await dst.commit(writes, checkpoint);
      } catch (err) {
        if (err instanceof TooManyOpsError) {
          log.warn({ maxOps: dst.maxOps }, 'the destination allows fewer operations per Txn than configured; batches are cut smaller');
          continue;
        }
        throw err;
      } finally {
        this.#inFlight = 0;
        this.#freeSince = performance.now();
      }
      if (writes.length > 0) metrics.writeLatency.observe((performance.now() - started) / 1000);
      for (const q of this.#queue.splice(0, taken)) {
        if (q.msg.kind !== 'change') continue;
        metrics.replicatedEvents.inc();
        for (const op of q.msg.change.ops) metrics.eventsApplied.labels({ action: op.kind }).inc();
      }
      this.#applied = upTo;
      hooks.applied(upTo);
      if (checkpoint !== null) hooks.persisted(checkpoint);
      this.#notify();
    }
  }
}
