// How long a consistency audit (src/replication/audit.ts) takes on a large keyspace, and what it costs: source
// requests, CPU and RSS of the auditing process. Two throw-away etcds per kind, the replica made equal by copying,
// then the audit's own comparison run read-only (as `etcd-mirror audit` does) a few times.
//   npm run bench:audit -- [--keys 100000] [--runs 3] [--kinds v2,v3]
// (tsc -p tsconfig.bench.json, then node dist-bench/bench/audit.js)
import { parseArgs } from 'node:util';
import { EtcdClient } from '../src/etcd/v2/client.js';
import { V3Client } from '../src/etcd/v3/client.js';
import { parseCluster, parseEndpoint } from '../src/etcd/endpoint.js';
import { startEtcd } from '../src/etcd/process.js';
import { runAudit } from '../src/replication/audit.js';
import { v3PinnedReader } from '../src/replication/audit-readers.js';
import { v2TreeReader } from '../src/replication/audit-readers-v2.js';
import { ByteKeyMap } from '../src/replication/keyspace.js';
import { KeyMap } from '../src/replication/keys.js';

const { values } = parseArgs({ options: { keys: { type: 'string', default: '100000' }, runs: { type: 'string', default: '3' }, kinds: { type: 'string', default: 'v3,v2' } } });
const KEYS = Number(values.keys);
const RUNS = Number(values.runs);
const value = (i: number) => `value-${i}-${'x'.repeat(40)}`;

async function measure(what: string, requests: () => number, run: () => Promise<{ result: string; keys: number }>): Promise<void> {
  for (let i = 0; i < RUNS; i++) {
    const before = requests();
    const cpu = process.cpuUsage();
    const rss = process.memoryUsage().rss;
    const started = performance.now();
    const r = await run();
    const ms = performance.now() - started;
    const used = process.cpuUsage(cpu);
    const n = requests() - before;
    console.log(
      `${what} run ${i + 1}: ${r.result}, ${r.keys} keys in ${Math.round(ms)} ms; ${n} source requests (${Math.round((n * 1000) / ms)}/s); ` +
        `CPU ${Math.round((used.user + used.system) / 1000)} ms; RSS ${Math.round(rss / 2 ** 20)} → ${Math.round(process.memoryUsage().rss / 2 ** 20)} MB`,
    );
  }
}

async function v3Bench(): Promise<void> {
  const [src, dst] = await Promise.all([startEtcd({ name: 'audit-src' }), startEtcd({ name: 'audit-dst' })]);
  const s = new V3Client(parseCluster(src.clientUrl, 'src'));
  const d = new V3Client(parseCluster(dst.clientUrl, 'dst'));
  try {
    let rev = 0;
    for (let i = 0; i < KEYS; i += 100) {
      const ops = Array.from({ length: Math.min(100, KEYS - i) }, (_, j) => ({ put: { key: Buffer.from(`/b/k${i + j}`), value: Buffer.from(value(i + j)) } }));
      await Promise.all([s.txn({ success: ops }).then((r) => (rev = r.revision)), d.txn({ success: ops })]);
    }
    await d.put(Buffer.from('/__replication/b'), Buffer.from(String(rev)));
    const keys = new ByteKeyMap(new KeyMap('/b', '/b', true, undefined));
    let requests = 0;
    const counted = { take: async () => void requests++ };
    const reader = v3PinnedReader(s, d, keys, counted);
    await measure(`v3 → v3, ${KEYS} keys`, () => requests, () => runAudit({ reader, guard: { allowMassDelete: true, massDeleteRatio: 1 } }, new AbortController().signal));
  } finally {
    await Promise.all([s.close(), d.close()]);
    await Promise.all([src.stop(), dst.stop()]);
  }
}

async function v2Bench(): Promise<void> {
  const [src, dst] = await Promise.all([startEtcd({ name: 'audit-src' }), startEtcd({ name: 'audit-dst' })]);
  const s = new EtcdClient(parseEndpoint(src.clientUrl, 'src'), { connections: 32 });
  const d = new EtcdClient(parseEndpoint(dst.clientUrl, 'dst'), { connections: 32 });
  try {
    for (let i = 0; i < KEYS; i += 64) {
      await Promise.all(Array.from({ length: Math.min(64, KEYS - i) }, (_, j) => Promise.all([s.put(`/b/k${i + j}`, { value: value(i + j) }), d.put(`/b/k${i + j}`, { value: value(i + j) })])));
    }
    let requests = 0;
    const reader = v2TreeReader(s, d, new KeyMap('/b', '/b', true, undefined), { take: async () => void requests++ });
    await measure(`v2 → v2, ${KEYS} keys`, () => requests, () => runAudit({ reader, guard: { allowMassDelete: true, massDeleteRatio: 1 } }, new AbortController().signal));
  } finally {
    await Promise.all([s.close(), d.close()]);
    await Promise.all([src.stop(), dst.stop()]);
  }
}

for (const kind of values.kinds.split(',')) {
  const started = performance.now();
  if (kind === 'v3') await v3Bench();
  else if (kind === 'v2') await v2Bench();
  console.log(`(${kind}: ${Math.round((performance.now() - started) / 1000)} s with loading)`);
}
