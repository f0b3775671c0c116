// `node dist-bench/bench/catch-up-probe.js [--events N]`: how long the source side alone takes to deliver a v3
// backlog: one watch from the oldest revision against the sliced catch-up (src/etcd/v3/catch-up.ts). Measures, prints.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { parseCluster } from '../src/etcd/endpoint.js';
import { startEtcd } from '../src/etcd/process.js';
import { V3Client } from '../src/etcd/v3/client.js';
import { catchUpWatch } from '../src/etcd/v3/catch-up.js';
import type { V3Watch } from '../src/etcd/v3/types.js';

const { values: v } = parseArgs({ options: { events: { type: 'string' }, rounds: { type: 'string' } } });
const events = Number(v.events ?? 10_000);
const src = await startEtcd({ name: 'probe-src' });
const client = new V3Client(parseCluster(src.clientUrl, 'source'));
const key = Buffer.from('/bench/');
const end = Buffer.from('/bench0');
try {
  let next = 0;
  const value = Buffer.alloc(100, 'v');
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < events) await client.put(Buffer.from(`/bench/load/k${next++}`), value);
  }));
  const head = (await client.status()).revision;
  const from = head - events + 1;
  const drain = async (name: string, watch: V3Watch) => {
    const t0 = performance.now();
    let seen = 0;
    let messages = 0;
    let last = from - 1;
    const marks: string[] = [];
    for await (const msg of watch) {
      if (msg.kind !== 'events') continue;
      messages++;
      for (const e of msg.events) {
        if (e.kv.modRevision <= last) throw new Error(`order: ${e.kv.modRevision} after ${last}`);
        last = e.kv.modRevision;
      }
      seen += msg.events.length;
      if (messages <= 12) marks.push(`${Math.round(performance.now() - t0)}:${msg.events.length}`);
      if (last >= head) break;
    }
    watch.close();
    process.stdout.write(`${name}: ${seen} events in ${messages} messages, ${Math.round(performance.now() - t0)} ms (${marks.join(' ')}); load ${os.loadavg()[0]!.toFixed(2)}\n`);
  };
  for (let r = 0; r < Number(v.rounds ?? 2); r++) {
    await drain('one watch', client.watch(key, end, { startRevision: from }));
    await drain('sliced', catchUpWatch((s, last) => client.watch(key, end, { startRevision: s, progressNotify: last }), { from }));
  }
} finally {
  await client.close();
  await src.stop();
}
process.exit(0);
