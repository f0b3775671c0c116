// How each kind reads the two sides of an audit (audit.ts) at one point: a v2 tree (one recursive GET: v2 has
// no paged read), a v3 range in pages pinned at a revision, and the point logic that pairs them.
import type { EtcdClient } from '../etcd/v2/client.js';
import type { EtcdNode } from '../etcd/v2/decode.js';
import { AuditAbortedError } from '../etcd/errors.js';
import type { KeyValue, V3Client } from '../etcd/v3/client.js';
import { entryDigest, type AuditEntry, type AuditPoint, type AuditReader, type Pages } from './audit.js';
import { keyId, type ByteKeyMap, type KeyRange } from './keyspace.js';
import type { KeyMap } from './keys.js';
import type { Source } from './types.js';
import { flatten, readDestination, takeSnapshot } from './v2/reconcile.js';
import type { SourceBudget } from './v2/source-budget.js';

const PAGE = 1000;

/** Waits for the source request budget before each source request (an expensive, password-checked source). */
type Budget = Pick<SourceBudget, 'take'> | undefined;

async function* once(entries: AuditEntry[]): Pages {
  yield entries;
}

/** A v3 range in pages, all at one revision (the first page's when none is given). */
export async function* v3Pages(client: V3Client, range: KeyRange, revision: number | undefined, keep: (kv: KeyValue) => AuditEntry | null, budget?: Budget, signal?: AbortSignal): Pages {
  let rev = revision;
  let from = range.key;
  for (;;) {
    await budget?.take('audit', signal);
    const page = await client.range(from, { rangeEnd: range.rangeEnd, revision: rev, limit: PAGE });
    rev ??= page.revision;
    const out: AuditEntry[] = [];
    for (const kv of page.kvs) {
      const e = keep(kv);
      if (e) out.push(e);
    }
    yield out;
    const last = page.kvs[page.kvs.length - 1];
    if (!page.more || !last) return;
    from = Buffer.concat([last.key, Buffer.from([0])]);
  }
}

const v3Entry = (id: Buffer, kv: KeyValue): AuditEntry => ({ id: keyId(id), digest: entryDigest(kv.value, kv.lease !== '0') });

/** Destination keys of a v3 destination the mirror owns, whose source counterpart it mirrors. */
function v3Destination(keys: ByteKeyMap) {
  return (kv: KeyValue): AuditEntry | null => (keys.ownsDst(kv.key) && keys.mirrors(keys.toSrc(kv.key)) ? v3Entry(kv.key, kv) : null);
}

const v3Name = (id: string): string => Buffer.from(id, 'latin1').toString('utf8');

/**
 * v3 → v3: the destination's checkpoint says R at destination revision H (written in the same Txn as the data it
 * covers; a heal since restores keys to the source at R too), so the destination at H is the replica of the
 * source at R: both are read pinned, exactly. A compacted R or H fails the read (CompactedError): the audit tries
 * again at a newer checkpoint.
 */
export function v3PinnedReader(src: V3Client, dst: V3Client, keys: ByteKeyMap, budget?: Budget): AuditReader {
  return {
    pinned: true,
    name: v3Name,
    async point(signal) {
      const cp = await dst.range(keys.checkpointKey);
      const raw = cp.kvs[0]?.value.toString('utf8').trim();
      if (raw === undefined || !/^\d+$/.test(raw)) throw new AuditAbortedError('the destination holds no replication index yet');
      const at = Number(raw);
      return {
        at,
        source: v3Pages(src, keys.srcRange, at, (kv) => (keys.mirrors(kv.key) ? v3Entry(keys.toDst(kv.key), kv) : null), budget, signal),
        destination: () => v3Pages(dst, keys.dstRange, cp.revision, v3Destination(keys), undefined, signal),
      };
    },
  };
}

function v2Entries(root: EtcdNode | null, keep: (key: string, node: EtcdNode) => string | null): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const [key, node] of flatten(root)) {
    const id = keep(key, node);
    if (id !== null) out.push({ id, digest: entryDigest(node.dir ? null : (node.value ?? ''), node.expiration !== undefined) });
  }
  return out;
}

/** v2 → v2: the source tree at its store index S; the destination tree read once the mirror applied past S. */
export function v2TreeReader(src: EtcdClient, dst: EtcdClient, map: KeyMap, budget?: Budget): AuditReader {
  const dir = (node: EtcdNode) => node.dir === true;
  return {
    pinned: false,
    name: (id) => id,
    async point(signal) {
      await budget?.take('audit', signal);
      const snap = await takeSnapshot(src, map.srcPrefix, signal);
      // The mirror's root exists on both sides whenever anything below it does: not compared itself.
      const source = v2Entries(snap.root, (key, node) => {
        const id = map.scope(key, dir(node), 'get') === 'mirrored' ? map.toDst(key) : null;
        return id === map.dstRoot ? null : id;
      });
      return {
        at: snap.etcdIndex,
        source: once(source),
        destination: async function* () {
          const root = await readDestination(dst, map, signal);
          yield v2Entries(root, (key, node) => (key !== map.dstRoot && map.ownsDst(key) && map.scope(map.toSrc(key), dir(node), 'get') === 'mirrored' ? key : null));
        },
      };
    },
  };
}

/** v2 → v3: the source's snapshot as the bridge maps it (files only, TTLs as leases) against the destination's keys. */
export function v2BridgeReader(source: Source, dst: V3Client, keys: ByteKeyMap, budget?: Budget): AuditReader {
  return {
    pinned: false,
    name: v3Name,
    async point(signal) {
      await budget?.take('audit', signal);
      const snap = await source.snapshot(signal);
      const entries = snap.entries.map((e) => ({ id: keyId(keys.toDst(e.key)), digest: entryDigest(e.value, e.lease !== undefined) }));
      return { at: snap.revision, source: once(entries), destination: () => v3Pages(dst, keys.dstRange, undefined, v3Destination(keys), undefined, signal) } satisfies AuditPoint;
    },
  };
}
