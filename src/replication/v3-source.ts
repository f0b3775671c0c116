// A v3 cluster as a replication source: snapshot = the prefix read in pages pinned at one revision; changes =
// one watch from checkpoint + 1, each revision's events grouped into one change; while the prefix is quiet, a
// proof (two range reads) that nothing in it changed lets the checkpoint follow the store revision. Progress
// notifications only trigger a proof: etcd 3.4.23 answers a progress request with the store revision even while
// the watch is still catching up (v3rpc sends it on its control stream), so taken alone it would skip events.
// A backlog longer than one of etcd's catch-up batches is read through several watches at once (catch-up.ts).
import type { ByteKeyMap } from './keyspace.js';
import { Channel } from './channel.js';
import type { Change, ChangeOp, KeyState, LeaseRef, Source, SourceMessage, SourceSnapshot } from './types.js';
import { isRetryable, UnreachableError } from '../etcd/errors.js';
import type { KeyValue, V3Client, V3Event } from '../etcd/v3/client.js';
import { catchUpWatch } from '../etcd/v3/catch-up.js';
import type { V3Watch } from '../etcd/v3/types.js';

const SNAPSHOT_PAGE = 1000;
/** A source that answers nothing (watch, proofs) for this long is reported unreachable: the machine stalls. */
const UNREACHABLE_AFTER_MS = 5_000;

export interface V3SourceOptions {
  client: V3Client;
  map: ByteKeyMap;
  highWater: number;
  /** While no message arrived for this long, prove the prefix quiet up to the store revision. */
  progressEveryMs: number;
  onSourceRevision(revision: number): void;
}

export class V3Source implements Source {
  readonly api = 'v3';
  readonly origin: string;
  /** etcd v3 keeps history until compacted: a reload reads the snapshot first, then watches from its revision. */
  readonly liveBeforeSnapshot = false;
  /** Source lease facts, by lease id: learned once per lease (keys share their lease). */
  readonly #leases = new Map<string, Promise<LeaseRef>>();

  constructor(private readonly opts: V3SourceOptions) {
    this.origin = opts.client.origin;
  }

  async currentRevision(): Promise<number> {
    return (await this.opts.client.status()).revision;
  }

  async snapshot(): Promise<SourceSnapshot> {
    const { client, map } = this.opts;
    const { revision, kvs } = await client.rangeAll(map.srcRange.key, map.srcRange.rangeEnd, { pageSize: SNAPSHOT_PAGE });
    const entries = [];
    for (const kv of kvs) {
      if (!map.mirrors(kv.key)) continue;
      const lease = await this.#lease(kv);
      entries.push({ key: kv.key, value: kv.value, ...(lease ? { lease } : {}) });
    }
    this.opts.onSourceRevision(revision);
    return { revision, entries };
  }

  async #lease(kv: KeyValue): Promise<LeaseRef | undefined> {
    if (kv.lease === '0') return undefined;
    let known = this.#leases.get(kv.lease);
    if (!known) {
      const id = kv.lease;
      known = this.opts.client.leaseTimeToLive(id).then(({ grantedTtl }) => ({ id, grantedTtl: Math.max(1, grantedTtl) }));
      known.catch(() => this.#leases.delete(id));
      this.#leases.set(id, known);
    }
    return known;
  }

  async #change(revision: number, events: V3Event[]): Promise<Change> {
    const ops: ChangeOp[] = [];
    for (const ev of events) {
      if (!this.opts.map.mirrors(ev.kv.key)) continue;
      if (ev.type === 'delete') {
        ops.push({ kind: 'delete', key: ev.kv.key });
        continue;
      }
      const lease = await this.#lease(ev.kv);
      ops.push({ kind: 'put', key: ev.kv.key, value: ev.kv.value, ...(lease ? { lease } : {}) });
    }
    return { revision, ops };
  }

  changes(from: number | 'now', signal: AbortSignal): AsyncIterable<SourceMessage> {
    if (from === 'now') throw new Error('a v3 source watches from a revision');
    const { client, map, highWater, progressEveryMs, onSourceRevision } = this.opts;
    const out = new Channel<SourceMessage>(highWater);
    const watch = this.#watch(from + 1);
    /** Everything up to here was handed over (events) or proven unchanged. */
    let handedOver = from;
    /** The prefix's key count at `handedOver`, when a proof learned it. */
    let countAt: { revision: number; count: number } | null = null;
    let lastMessageAt = Date.now();
    /** Last answer from the source (a watch message or a proof's reads): the watch itself retries forever. */
    let lastContactAt = Date.now();
    const unreachableAfterMs = Math.max(UNREACHABLE_AFTER_MS, 3 * progressEveryMs);
    const fail = (err: unknown) => {
      out.end(err);
      watch.close();
    };
    let proving: Promise<void> | null = null;
    const prove = () => {
      const after = handedOver;
      proving ??= this.#proveQuiet(after, countAt, signal)
        .then((proof) => {
          lastContactAt = Date.now();
          // An event that came meanwhile was a transient the proof cannot see past: try again later.
          if (!proof || handedOver !== after) return;
          handedOver = proof.revision;
          countAt = proof;
          onSourceRevision(proof.revision);
          out.push({ kind: 'progress', revision: proof.revision });
        })
        .catch((err: unknown) => {
          // A retryable failure is no proof this time (the silence below reports an outage); anything else is a fault.
          if (!isRetryable(err) && !signal.aborted) fail(err);
        })
        .finally(() => (proving = null));
    };
    const quietCheck = setInterval(() => {
      const now = Date.now();
      if (now - lastContactAt > unreachableAfterMs) fail(new UnreachableError(`${client.origin}: no answer from the source for ${Math.round((now - lastContactAt) / 1000)} s`));
      else if (now - lastMessageAt >= progressEveryMs) prove();
    }, Math.max(50, Math.floor(progressEveryMs / 2)));
    const onAbort = () => watch.close();
    signal.addEventListener('abort', onAbort, { once: true });
    void (async () => {
      try {
        for await (const msg of watch) {
          lastMessageAt = lastContactAt = Date.now();
          onSourceRevision(msg.revision);
          if (msg.kind === 'progress') {
            prove();
            continue;
          }
          // One message holds whole revisions, in order: one change per revision.
          let start = 0;
          for (let i = 1; i <= msg.events.length; i++) {
            const rev = msg.events[start]!.kv.modRevision;
            if (i < msg.events.length && msg.events[i]!.kv.modRevision === rev) continue;
            const events = msg.events.slice(start, i);
            start = i;
            // Already covered by a proof: it changed nothing in the prefix, net (created and removed in between).
            if (rev <= handedOver) continue;
            handedOver = rev;
            countAt = null;
            const change = await this.#change(rev, events);
            change.receivedAt = msg.receivedAt;
            // Writes outside the mirrored keys (P!x in the watched range) still move the checkpoint.
            out.push(change.ops.length > 0 ? { kind: 'change', change } : { kind: 'progress', revision: rev });
          }
          await out.room();
        }
        out.end();
      } catch (err) {
        out.end(signal.aborted ? undefined : err);
      } finally {
        clearInterval(quietCheck);
        signal.removeEventListener('abort', onAbort);
        watch.close();
      }
    })();
    return out;
  }

  /** The prefix watched from `start`, a long backlog in parallel slices (catch-up.ts). */
  #watch(start: number): V3Watch {
    const { client, map } = this.opts;
    return catchUpWatch((startRevision, last) => client.watch(map.srcRange.key, map.srcRange.rangeEnd, { startRevision, progressNotify: last }), { from: start });
  }

  /**
   * Nothing in the prefix changed between revision `after` and the store revision R when the prefix holds as many
   * keys at R as at `after` and none of them was modified after `after`: a change, a creation or a deletion
   * each breaks one of the two (a key created and removed in between leaves no trace, and need not).
   */
  async #proveQuiet(after: number, known: { revision: number; count: number } | null, signal: AbortSignal): Promise<{ revision: number; count: number } | null> {
    const { client, map } = this.opts;
    const range = { rangeEnd: map.srcRange.rangeEnd, keysOnly: true };
    const now = await client.range(map.srcRange.key, { ...range, limit: 1, sortByModDescending: true });
    if (signal.aborted || now.revision <= after) return null;
    if ((now.kvs[0]?.modRevision ?? 0) > after) return null; // a change the watch has not delivered yet
    const before = known?.revision === after ? known.count : (await client.range(map.srcRange.key, { ...range, revision: after, countOnly: true })).count;
    return before === now.count ? { revision: now.revision, count: now.count } : null;
  }

  async keyAt(key: Buffer, revision: number): Promise<KeyState> {
    const kv = (await this.opts.client.range(key, { revision })).kvs[0];
    if (!kv || !this.opts.map.mirrors(kv.key)) return { entry: null };
    const lease = await this.#lease(kv);
    return { entry: { key: kv.key, value: kv.value, ...(lease ? { lease } : {}) } };
  }

  storable(applied: number): number {
    return applied;
  }

  /** etcd truncates to whole seconds (0 in the last one) and answers -1 for a lease it no longer has. */
  async leaseRemaining(lease: LeaseRef): Promise<number> {
    return (await this.opts.client.leaseTimeToLive(lease.id)).ttl;
  }

  /** A v3 watch makes no claims to confirm. */
  confirmedUpTo(): null {
    return null;
  }

  async close(): Promise<void> {
    await this.opts.client.close();
  }
}
