// A source and a destination etcd with v3 clients on both, and an event recorder, for the v3 mirror tests.
import { V3Client, type V3Event } from '../../src/etcd/v3/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { rangeOf } from '../../src/replication/keyspace.js';

export interface V3Pair {
  src: EtcdProcess;
  dst: EtcdProcess;
  s: V3Client;
  d: V3Client;
  stop(): Promise<void>;
}

export async function startV3Pair(): Promise<V3Pair> {
  const [src, dst] = await Promise.all([startEtcd({ name: 'src' }), startEtcd({ name: 'dst' })]);
  const s = new V3Client(parseCluster(src.clientUrl, 'src'));
  const d = new V3Client(parseCluster(dst.clientUrl, 'dst'));
  return {
    src,
    dst,
    s,
    d,
    async stop() {
      await Promise.all([s.close(), d.close()]);
      await Promise.all([src.stop(), dst.stop()]);
    },
  };
}

export const b = (s: string): Buffer => Buffer.from(s);

/** key → value (utf8) of every key under a prefix (path boundary), leases as well. */
export async function v3Tree(c: V3Client, prefix: string): Promise<Map<string, { value: string; lease: string }>> {
  const r = rangeOf(b(prefix));
  const { kvs } = await c.rangeAll(r.key, r.rangeEnd);
  const tree = new Map<string, { value: string; lease: string }>();
  for (const kv of kvs) {
    const key = kv.key.toString('utf8');
    if (key === prefix || key.startsWith(prefix + '/')) tree.set(key, { value: kv.value.toString('utf8'), lease: kv.lease });
  }
  return tree;
}

export const values = (t: Map<string, { value: string }>): Record<string, string> => Object.fromEntries([...t].map(([k, v]) => [k, v.value]).sort());

export { waitFor } from './wait.js';

export interface Recorded {
  revision: number;
  events: V3Event[];
}

/** Records every watch message on a range from a revision on, in arrival order. */
export function record(c: V3Client, prefix: string, startRevision = 1): { log: Recorded[]; stop(): void } {
  const r = rangeOf(b(prefix));
  const watch = c.watch(r.key, r.rangeEnd, { startRevision, progressNotify: false });
  const log: Recorded[] = [];
  void (async () => {
    try {
      for await (const m of watch) if (m.kind === 'events') log.push({ revision: m.events[0]!.kv.modRevision, events: m.events });
    } catch {
      // closed
    }
  })();
  return { log, stop: () => watch.close() };
}

/**
 * For a destination log of puts whose values were written in increasing order on the source: the values a
 * destination revision shows that are lower than a value an earlier revision showed (a reordered or rewound
 * write). Events of one revision are one atomic Txn: their order among themselves means nothing.
 */
export function rewoundValues(log: Recorded[], isData: (key: string) => boolean): number[] {
  const byRevision = new Map<number, number[]>();
  for (const r of log)
    for (const e of r.events)
      if (e.type === 'put' && isData(e.kv.key.toString())) {
        const rev = e.kv.modRevision;
        byRevision.set(rev, [...(byRevision.get(rev) ?? []), Number(e.kv.value.toString())]);
      }
  let highest = Number.NEGATIVE_INFINITY;
  const rewound: number[] = [];
  for (const rev of [...byRevision.keys()].sort((a, b) => a - b)) {
    const vals = byRevision.get(rev)!;
    rewound.push(...vals.filter((v) => v < highest));
    highest = Math.max(highest, ...vals);
  }
  return rewound;
}
