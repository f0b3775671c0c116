// A v3 cluster as a replication source: snapshot = the prefix read in pages pinned at one revision; changes =
// one watch from checkpoint + 1, each revision's events grouped into one change, progress notifications (asked
// for while the prefix is quiet) as proofs that the checkpoint may follow the store revision.
import type { ByteKeyMap } from '../../replication/keyspace.js';
import { Channel } from '../../replication/channel.js';
import type { Change, ChangeOp, LeaseRef, Source, SourceMessage, SourceSnapshot } from '../../replication/types.js';
import { MirrorError } from '../errors.js';
import type { KeyValue, V3Client, V3Event } from './client.js';

const SNAPSHOT_PAGE = 1000;

/** A progress notification said nothing happened up to R, then an event at or below R came: only a resync can
 * tell what is true (etcd 3.4.23 has progress-notification bugs). */
export class ProgressContradictedError extends MirrorError {
  override readonly code = 'EM_ERR_RESYNC_NEEDED';
  readonly historyLost = true;
  constructor(
    readonly progress: number,
    readonly eventRevision: number,
  ) {
    super(`the source sent an event at revision ${eventRevision} after a progress notification at ${progress}`);
  }
}

export interface V3SourceOptions {
  client: V3Client;
  map: ByteKeyMap;
  highWater: number;
  /** While no message arrived for this long, ask the watch for a progress notification. */
  progressEveryMs: number;
  onSourceRevision(revision: number): void;
}

export class V3Source implements Source {
  readonly api = 'v3';
  readonly origin: string;
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
      known = this.opts.client.leaseTimeToLive(id).then(({ ttl, grantedTtl }) => ({ id, ttl: Math.max(1, ttl), grantedTtl: Math.max(1, grantedTtl) }));
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

  changes(from: number, signal: AbortSignal): AsyncIterable<SourceMessage> {
    const { client, map, highWater, progressEveryMs, onSourceRevision } = this.opts;
    const out = new Channel<SourceMessage>(highWater);
    const watch = client.watch(map.srcRange.key, map.srcRange.rangeEnd, { startRevision: from + 1, progressNotify: true });
    let lastMessageAt = Date.now();
    const asker = setInterval(() => {
      if (Date.now() - lastMessageAt >= progressEveryMs) watch.requestProgress();
    }, Math.max(50, Math.floor(progressEveryMs / 2)));
    const onAbort = () => watch.close();
    signal.addEventListener('abort', onAbort, { once: true });
    void (async () => {
      let progressAt = from;
      let lastEvent = from;
      try {
        for await (const msg of watch) {
          lastMessageAt = Date.now();
          onSourceRevision(msg.revision);
          if (msg.kind === 'progress') {
            if (msg.revision > progressAt && msg.revision > lastEvent) {
              progressAt = msg.revision;
              out.push({ kind: 'progress', revision: msg.revision });
            }
          } else {
            // One message holds whole revisions, in order: one change per revision.
            let start = 0;
            for (let i = 1; i <= msg.events.length; i++) {
              const rev = msg.events[start]!.kv.modRevision;
              if (i < msg.events.length && msg.events[i]!.kv.modRevision === rev) continue;
              if (rev <= progressAt) throw new ProgressContradictedError(progressAt, rev);
              lastEvent = rev;
              const change = await this.#change(rev, msg.events.slice(start, i));
              // Writes outside the mirrored keys (P!x in the watched range) still move the checkpoint.
              out.push(change.ops.length > 0 ? { kind: 'change', change } : { kind: 'progress', revision: rev });
              start = i;
            }
          }
          await out.room();
        }
        out.end();
      } catch (err) {
        out.end(signal.aborted ? undefined : err);
      } finally {
        clearInterval(asker);
        signal.removeEventListener('abort', onAbort);
        watch.close();
      }
    })();
    return out;
  }

  storable(applied: number): number {
    return applied;
  }

  async leaseRemaining(lease: LeaseRef): Promise<number> {
    return (await this.opts.client.leaseTimeToLive(lease.id)).ttl;
  }

  async close(): Promise<void> {
    await this.opts.client.close();
  }
}
