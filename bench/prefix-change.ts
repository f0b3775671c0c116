// The seed's other operation: widening a running pair from /conftool to / (with an ignore regex) without wiping
// the replica. N keys under /conftool are mirrored; OLD also holds N/100 keys under /spicerack (half of them
// ignored locks); the mirror is stopped and started with the new prefixes and --reload, which reconciles: it writes
// what differs and deletes what OLD lacks, never empties NEW. Prints how long the reconcile took and what it wrote.
//   npx tsc -p tsconfig.bench.json && node dist-bench/bench/prefix-change.js [--keys 100000]
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseEndpoint } from '../src/etcd/endpoint.js';
import { EtcdClient } from '../src/etcd/v2/client.js';
import { freePort, startEtcd } from '../src/etcd/process.js';

const BIN = fileURLToPath(new URL('../../bin/etcd-mirror.js', import.meta.url));
const { values } = parseArgs({ options: { keys: { type: 'string', default: '100000' } } });
const keys = Number(values.keys);

async function fill(c: EtcdClient, n: number, key: (i: number) => string): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < n) {
      const i = next++;
      await c.put(key(i), { value: `value-${i}` });
    }
  }));
}

interface State { state: string; lagEvents: number | null }

async function mirror(args: string[]): Promise<{ proc: ChildProcess; port: number; tailing: () => Promise<number> }> {
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, '--port', String(port), '--listen-address', '127.0.0.1', ...args], { stdio: 'ignore' });
  const started = performance.now();
  return {
    proc,
    port,
    async tailing() {
      for (let i = 0; i < 12_000; i++) {
        const s = await fetch(`http://127.0.0.1:${port}/state`).then((r) => r.json() as Promise<State>).catch(() => null);
        if (s?.state === 'tailing' && s.lagEvents === 0) return (performance.now() - started) / 1000;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('never reached tailing');
    },
  };
}

const metric = async (port: number, name: string): Promise<number> =>
  Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())?.[1] ?? NaN);

const [oldEtcd, newEtcd] = await Promise.all([startEtcd({ name: 'old' }), startEtcd({ name: 'new' })]);
const old = new EtcdClient(parseEndpoint(oldEtcd.clientUrl, 'old'), { connections: 32 });
try {
  await fill(old, keys, (i) => `/conftool/d${i % 100}/k${i}`);
  const first = await mirror(['--reload', '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', oldEtcd.clientUrl, newEtcd.clientUrl]);
  process.stdout.write(`initial --reload of ${keys} keys into an empty NEW: ${(await first.tailing()).toFixed(1)} s\n`);
  first.proc.kill('SIGTERM');
  await new Promise((r) => first.proc.on('exit', r));
  await fill(old, keys / 100, (i) => (i % 2 ? `/spicerack/locks/etcd/l${i}` : `/spicerack/state/s${i}`));
  const widened = await mirror([
    '--reload', '--src-prefix', '/', '--dst-prefix', '/', '--strip', '--src-ignore-keys-regex', '/spicerack/locks/etcd(/.*)?',
    oldEtcd.clientUrl, newEtcd.clientUrl,
  ]);
  const seconds = await widened.tailing();
  const written = await metric(widened.port, 'etcdmirror_reconcile_keys_written_total');
  const deleted = await metric(widened.port, 'etcdmirror_reconcile_keys_deleted_total');
  process.stdout.write(`widened to / with --reload (${keys} equal keys, ${keys / 100} new under /spicerack, half ignored): ${seconds.toFixed(1)} s, ${written} keys written, ${deleted} deleted\n`);
  widened.proc.kill('SIGTERM');
  await new Promise((r) => widened.proc.on('exit', r));
} finally {
  await old.close();
  await Promise.all([oldEtcd.stop(), newEtcd.stop()]);
}
