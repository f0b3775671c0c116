// How a v2 source's audit (audit.ts) reads at one point: the source tree at its store index (one recursive GET:
// v2 has no paged read), the destination once the mirror applied past it — a v2 tree, or v3 pages (the bridge).
import { KeyNotFoundError } from '../etcd/errors.js';
import type { EtcdClient } from '../etcd/v2/client.js';
import type { EtcdNode } from '../etcd/v2/decode.js';
import type { V3Client } from '../etcd/v3/client.js';
import { entryDigest, type AuditEntry, type AuditPoint, type AuditReader } from './audit.js';
import { once, v3Destination, v3Name, v3Pages, type Budget } from './audit-readers.js';
import { keyId, type ByteKeyMap } from './keyspace.js';
import type { KeyMap } from './keys.js';
import { flatten, readDestination, takeSnapshot } from './v2/reconcile.js';

/** `expiring`: ids of nodes that expire (a TTL of their own or of a directory above them) → their modifiedIndex. */
function v2Entries(root: EtcdNode | null, keep: (key: string, node: EtcdNode) => string | null, expiring?: Map<string, number>): AuditEntry[] {
  const out: AuditEntry[] = [];
  const expires = new Set<string>();
  // flatten lists a directory before what it holds.
  for (const [key, node] of flatten(root)) {
    if (node.expiration !== undefined || expires.has(key.slice(0, key.lastIndexOf('/')))) expires.add(key);
    const id = keep(key, node);
    if (id === null) continue;
    out.push({ id, digest: entryDigest(node.dir ? null : (node.value ?? ''), node.expiration !== undefined) });
    if (expires.has(key)) expiring?.set(id, node.modifiedIndex);
  }
  return out;
}

/** Of `ids` (TTL nodes at the point), those whose source node is gone or was written since. */
async function v2ChangedSince(src: EtcdClient, ids: string[], srcKey: (id: string) => string, expiring: Map<string, number>, budget: Budget, signal: AbortSignal): Promise<Set<string>> {
  const out = new Set<string>();
  for (const id of ids) {
    if (!expiring.has(id)) continue;
    await budget?.take('audit', signal);
    const now = await src.get(srcKey(id), { quorum: true, signal }).then(
      (r) => r.body.node.modifiedIndex,
      (err: unknown) => {
        if (err instanceof KeyNotFoundError) return null;
        throw err;
      },
    );
    if (now !== expiring.get(id)) out.add(id);
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
      const expiring = new Map<string, number>();
      // The mirror's root exists on both sides whenever anything below it does: not compared itself.
      const source = v2Entries(snap.root, (key, node) => {
        const id = map.scope(key, dir(node), 'get') === 'mirrored' ? map.toDst(key) : null;
        return id === map.dstRoot ? null : id;
      }, expiring);
      return {
        at: snap.etcdIndex,
        source: once(source),
        changedSince: (ids, s) => v2ChangedSince(src, ids, (id) => map.toSrc(id), expiring, budget, s),
        destination: async function* () {
          const root = await readDestination(dst, map, signal);
          yield v2Entries(root, (key, node) => (key !== map.dstRoot && map.ownsDst(key) && map.scope(map.toSrc(key), dir(node), 'get') === 'mirrored' ? key : null));
        },
      };
    },
  };
}

/**
 * v2 → v3: the source tree as the bridge maps it (values only: directories have no v3 form; TTLs become leases)
 * against the destination's keys. A key whose TTL ran out but whose expire event has not come yet still counts:
 * its copy goes with that event.
 */
export function v2BridgeReader(src: EtcdClient, map: KeyMap, dst: V3Client, keys: ByteKeyMap, budget?: Budget): AuditReader {
  return {
    pinned: false,
    name: v3Name,
    async point(signal) {
      await budget?.take('audit', signal);
      const snap = await takeSnapshot(src, map.srcPrefix, signal);
      const expiring = new Map<string, number>();
      const source = v2Entries(snap.root, (key, node) => (node.dir || map.scope(key, false, 'get') !== 'mirrored' ? null : keyId(keys.toDst(Buffer.from(key)))), expiring);
      return {
        at: snap.etcdIndex,
        source: once(source),
        destination: () => v3Pages(dst, keys.dstRange, undefined, v3Destination(keys), undefined, signal),
        changedSince: (ids, s) => v2ChangedSince(src, ids, (id) => keys.toSrc(Buffer.from(id, 'latin1')).toString('utf8'), expiring, budget, s),
      } satisfies AuditPoint;
    },
  };
}
