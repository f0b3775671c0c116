// A v2 cluster as a replication source, for either destination kind. The v2 poller (src/replication/v2/poller.ts)
// does the hard part — history catch-up, the live stream, quiet proofs that keep the stored index inside etcd's
// 1000-event window — and this turns what it hands over into normalised changes, each with its v2 event (a v2
// destination replays the event itself: directories, TTLs, the value before it for the replay guard).
import type { EtcdClient } from '../etcd/v2/client.js';
import { REMOVAL_ACTIONS, WRITE_ACTIONS, type EtcdEvent, type EtcdNode } from '../etcd/v2/decode.js';
import { KeyNotFoundError } from '../etcd/errors.js';
import { remainingTtl } from './v2/apply.js';
import type { KeyMap } from './keys.js';
import { BodyGaps } from './v2/body-gaps.js';
import { runPoller } from './v2/poller.js';
import type { SourceBudget } from './v2/source-budget.js';
import { flatten, takeSnapshot } from './v2/reconcile.js';
import { Channel } from './channel.js';
import type { Log, ReplicationMetrics, ReplicationOptions } from './ports.js';
import type { Change, ChangeOp, KeyState, LeaseRef, Source, SourceMessage, SourceSnapshot } from './types.js';


export interface V2SourceOptions {
  src: EtcdClient;
  map: KeyMap;
  /** Prefetched changes the pipeline may be behind by before the poller waits. */
  highWater: number;
  /** false: the reference tool's loop, one long-poll per event, fetched only once the pipeline has written the one
   * before. */
  pipeline: boolean;
  /** The destination is v2: snapshots keep the tree as read (directories, TTLs) instead of flat entries. */
  treeSnapshots?: boolean;
  rearmMs: number;
  gaps: BodyGaps;
  /** An expensive source's request budget. */
  budget?: SourceBudget;
  /** Each source store index seen (for lag). */
  onSourceIndex(index: number): void;
  /** Each watch's outcome (metrics). */
  onPoll?(outcome: 'event' | 'quiet' | 'empty' | 'error' | 'stalled'): void;
  log?: { debug(fields: object, message?: string): void };
}

/** A v2 source as either destination kind's wiring builds it: the daemon's options and metrics, 10,000 read ahead. */
export function v2SourceFor(o: {
  src: EtcdClient;
  map: KeyMap;
  config: Pick<ReplicationOptions, 'pipeline' | 'quietRearmMs'>;
  budget: SourceBudget | undefined;
  log: Log;
  metrics: Pick<ReplicationMetrics, 'watchPolls'>;
  treeSnapshots?: boolean;
  onSourceIndex(index: number): void;
}): V2Source {
  return new V2Source({
    src: o.src,
    map: o.map,
    highWater: 10_000,
    pipeline: o.config.pipeline,
    rearmMs: o.config.quietRearmMs,
    gaps: new BodyGaps(),
    ...(o.budget ? { budget: o.budget } : {}),
    ...(o.treeSnapshots ? { treeSnapshots: true } : {}),
    log: o.log,
    onPoll: (outcome) => o.metrics.watchPolls.labels({ outcome }).inc(),
    onSourceIndex: o.onSourceIndex,
  });
}

/** v2 TTL keys become lease-backed: one lease per key and write, so a rewrite never shortens another key's life. */
function leaseOf(node: EtcdNode, nowMs: number): LeaseRef | undefined {
  if (node.expiration === undefined) return undefined;
  // The TTL it was set with is not in a node: the most the source reports for it is the closest known.
  return { id: `v2:${node.modifiedIndex}:${node.key}`, grantedTtl: Math.max(1, remainingTtl(node.expiration, nowMs), node.ttl ?? 0) };
}

export class V2Source implements Source {
  readonly api = 'v2';
  readonly origin: string;
  /** etcd v2 keeps 1,000 events: a reload registers its reader before a snapshot that may take longer. */
  readonly liveBeforeSnapshot = true;

  /** Highest index a quiet claim covered, and up to where every claim is confirmed. */
  #claimedUpTo = Number.NEGATIVE_INFINITY;
  #confirmed = Number.NEGATIVE_INFINITY;

  constructor(private readonly opts: V2SourceOptions) {
    this.origin = opts.src.origin;
  }

  async currentRevision(signal?: AbortSignal): Promise<number> {
    try {
      return (await this.opts.src.get('/', { signal })).etcdIndex;
    } catch (err) {
      if (err instanceof KeyNotFoundError) return err.etcdIndex;
      throw err;
    }
  }

  async snapshot(signal?: AbortSignal): Promise<SourceSnapshot> {
    const { src, map } = this.opts;
    const snap = await takeSnapshot(src, map.srcPrefix, signal);
    this.opts.onSourceIndex(snap.etcdIndex);
    if (this.opts.treeSnapshots) return { revision: snap.etcdIndex, entries: [], v2Tree: snap.root };
    const now = src.serverNow();
    const entries = [];
    for (const [key, node] of flatten(snap.root)) {
      // Empty directories have no v3 form; a directory is implied by the keys below it.
      if (node.dir || map.scope(key, false, 'get') !== 'mirrored') continue;
      const lease = leaseOf(node, now);
      entries.push({ key: Buffer.from(key), value: Buffer.from(node.value ?? ''), ...(lease ? { lease } : {}) });
    }
    return { revision: snap.etcdIndex, entries };
  }

  /** One v2 event as a change: what it does inside the prefix, in v3 terms. Empty ops: nothing to write. */
  change(ev: EtcdEvent): Change {
    const { map, src } = this.opts;
    const key = ev.node.key;
    const dir = ev.node.dir === true || ev.prevNode?.dir === true;
    const scope = map.scope(key, dir, ev.action);
    const revision = ev.node.modifiedIndex;
    if (scope === 'outside' || scope === 'hidden' || scope === 'ignored') return { revision, ops: [], skipped: scope };
    if (scope === 'mirrored' && !REMOVAL_ACTIONS.has(ev.action) && !WRITE_ACTIONS.has(ev.action)) return { revision, ops: [], skipped: 'unknown', event: ev };
    // The ops in v3 terms are built when first read: a v2 destination replays `event` and never reads them, and
    // their copies of key and value cost every event of a v2 → v2 mirror (the clock is read now, as before).
    const now = src.serverNow();
    const build = (): ChangeOp[] => {
      const ops: ChangeOp[] = [];
      if (scope === 'ancestor') ops.push({ kind: 'deleteTree', key: Buffer.from(map.srcPrefix) });
      else if (scope === 'mirrored') {
        if (REMOVAL_ACTIONS.has(ev.action)) ops.push(dir ? { kind: 'deleteTree', key: Buffer.from(key) } : { kind: 'delete', key: Buffer.from(key) });
        else if (WRITE_ACTIONS.has(ev.action) && !ev.node.dir) {
          const lease = leaseOf(ev.node, now);
          ops.push({ kind: 'put', key: Buffer.from(key), value: Buffer.from(ev.node.value ?? ''), ...(lease ? { lease } : {}) });
        }
      }
      return ops;
    };
    let ops: ChangeOp[] | undefined;
    return {
      revision,
      event: ev,
      get ops() {
        return (ops ??= build());
      },
    };
  }

  changes(from: number | 'now', signal: AbortSignal): AsyncIterable<SourceMessage> {
    const { src, map, highWater, pipeline, rearmMs, gaps, onSourceIndex, onPoll, log } = this.opts;
    // Lock-step without the pipeline: the next event is fetched once the one before is written.
    const out = new Channel<SourceMessage>(pipeline ? highWater : 0);
    // A quiet claim is handed over at once (the writer passes it, as it passes an event); what may be stored stays
    // below every unconfirmed claim (storable()). A confirmation is handed over too, as a proof the writer is
    // already past: the checkpoint may move with it.
    const start = from === 'now' ? Number.NEGATIVE_INFINITY : from;
    let handedOver = start;
    let confirmed = start;
    let told = start;
    this.#claimedUpTo = Number.NEGATIVE_INFINITY;
    this.#confirmed = start;
    runPoller({
      src,
      prefix: map.srcPrefix,
      fromIndex: from,
      signal,
      pipeline,
      rearmMinMs: Math.min(15, rearmMs),
      rearmMaxMs: rearmMs,
      gaps,
      budget: this.opts.budget,
      registered: (etcdIndex) => {
        handedOver = told = etcdIndex;
        out.push({ kind: 'registered', revision: etcdIndex });
      },
      streamStarted: (etcdIndex) => out.push({ kind: 'live', revision: etcdIndex }),
      sink: {
        event: (ev) => {
          handedOver = Math.max(handedOver, ev.node.modifiedIndex);
          const change = this.change(ev);
          change.receivedAt = performance.now();
          out.push({ kind: 'change', change });
        },
        quiet: (index) => {
          log?.debug({ index }, 'quiet watch: no prefix event up to this index');
          handedOver = Math.max(handedOver, index);
          this.#claimedUpTo = Math.max(this.#claimedUpTo, index);
          out.push({ kind: 'progress', revision: index });
        },
        confirmed: (index) => {
          confirmed = Math.max(confirmed, index);
          this.#confirmed = confirmed;
          const to = Math.min(handedOver, confirmed);
          if (to <= told) return;
          told = to;
          out.push({ kind: 'progress', revision: to });
        },
        sourceIndex: onSourceIndex,
        room: () => out.room(),
        poll: (outcome) => onPoll?.(outcome),
      },
    }).then(
      () => out.end(),
      (err: unknown) => out.end(signal.aborted ? undefined : err),
    );
    return out;
  }

  /** v2 reads only the present: it is the state at `revision` when the key has not changed since. */
  async keyAt(key: Buffer, revision: number, signal?: AbortSignal): Promise<KeyState> {
    const { src, map } = this.opts;
    const path = key.toString('utf8');
    try {
      const node = (await src.get(path, { signal, quorum: true })).body.node;
      if (node.modifiedIndex > revision) return { superseded: true };
      if (node.dir || map.scope(path, false, 'get') !== 'mirrored') return { entry: null };
      const lease = leaseOf(node, src.serverNow());
      return { entry: { key, value: Buffer.from(node.value ?? ''), ...(lease ? { lease } : {}) } };
    } catch (err) {
      // Gone by the answer's store index: absent at `revision` too once the destination has got that far.
      if (err instanceof KeyNotFoundError) return err.etcdIndex <= revision ? { entry: null } : { retryAt: err.etcdIndex };
      throw err;
    }
  }

  /** An applied event may be stored only once no unconfirmed quiet claim lies below it: a contradicted claim
   * means an event there was missed, and the checkpoint must not pass it. */
  storable(applied: number): number {
    return this.#claimedUpTo <= this.#confirmed ? applied : Math.min(applied, this.#confirmed);
  }

  /** A v2 TTL refresh sends no watch event: the key is read to learn whether it still lives. While the source has
   * it, it lives, whatever the clock estimate says (its `expire` event follows). */
  async leaseRemaining(lease: LeaseRef, signal?: AbortSignal): Promise<number> {
    const key = lease.id.slice(lease.id.indexOf(':', 3) + 1);
    try {
      const node = (await this.opts.src.get(key, { signal })).body.node;
      if (node.expiration === undefined) return -1; // now permanent: a put without lease follows as an event
      return Math.max(0, remainingTtl(node.expiration, this.opts.src.serverNow()));
    } catch (err) {
      if (err instanceof KeyNotFoundError) return -1;
      throw err;
    }
  }

  confirmedUpTo(): number | null {
    return Number.isFinite(this.#confirmed) ? this.#confirmed : null;
  }

  async close(): Promise<void> {
    await this.opts.src.close();
  }
}
