// How a v2 source's audit (audit.ts) reads at one point: the source tree at its store index (one recursive GET:
// v2 has no paged read), the destination once the mirror applied past it — a v2 tree, or v3 pages (the bridge).
import type { EtcdClient } from '../etcd/v2/client.js';
import type { EtcdNode } from '../etcd/v2/decode.js';
import type { V3Client } from '../etcd/v3/client.js';
import { entryDigest, type AuditEntry, type AuditPoint, type AuditReader } from './audit.js';
import { once, v3Destination, v3Name, v3Pages, type Budget } from './audit-readers.js';
import { keyId, type ByteKeyMap } from './keyspace.js';
import type { KeyMap } from './keys.js';
import { flatten, readDestination, takeSnapshot } from './v2/reconcile.js';

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
      const source = v2Entries(snap.root, (key, node) => (node.dir || map.scope(key, false, 'get') !== 'mirrored' ? null : keyId(keys.toDst(Buffer.from(key)))));
      return { at: snap.etcdIndex, source: once(source), destination: () => v3Pages(dst, keys.dstRange, undefined, v3Destination(keys), undefined, signal) } satisfies AuditPoint;
    },
  };
}
