// How long each step of `etcd-mirror switchover` takes on N keys (v2 → v2, two local etcds): the mirror is
// reloaded, the load stops, then the command runs with the given --quiet; each step's time is taken from when
// its line appears. Usage: npm run build-bench-style (tsc -p tsconfig.bench.json), then
//   node dist-bench/bench/switchover.js [--keys 1000] [--quiet 5]
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseEndpoint } from '../src/etcd/endpoint.js';
import { EtcdClient } from '../src/etcd/v2/client.js';
import { freePort, startEtcd } from '../src/etcd/process.js';

const BIN = fileURLToPath(new URL('../../bin/etcd-mirror.js', import.meta.url));
const { values } = parseArgs({ options: { keys: { type: 'string', default: '1000' }, quiet: { type: 'string', default: '5' } } });
const keys = Number(values.keys);

const [oldEtcd, newEtcd] = await Promise.all([startEtcd({ name: 'old' }), startEtcd({ name: 'new' })]);
const old = new EtcdClient(parseEndpoint(oldEtcd.clientUrl, 'old'), { connections: 32 });
try {
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < keys) {
      const i = next++;
      await old.put(`/conftool/d${i % 100}/k${i}`, { value: `value-${i}` });
    }
  }));
  const flags = ['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', oldEtcd.clientUrl, newEtcd.clientUrl];
  const port = await freePort();
  const mirror = spawn(process.execPath, [BIN, '--reload', '--port', String(port), '--listen-address', '127.0.0.1', ...flags], { stdio: 'ignore' });
  for (let i = 0; i < 6000; i++) {
    const state = await fetch(`http://127.0.0.1:${port}/state`).then((r) => r.json() as Promise<{ state: string; lagEvents: number | null }>).catch(() => null);
    if (state?.state === 'tailing' && state.lagEvents === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const started = performance.now();
  const cmd = spawn(process.execPath, [BIN, 'switchover', '--quiet', values.quiet!, ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
  let last = started;
  let buffered = '';
  cmd.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      const now = performance.now();
      process.stdout.write(`${((now - last) / 1000).toFixed(2)} s  ${line.slice(0, 110)}\n`);
      last = now;
    }
  });
  const code = await new Promise<number | null>((r) => cmd.on('exit', r));
  process.stdout.write(`${keys} keys, --quiet ${values.quiet}: exit ${code}, total ${((performance.now() - started) / 1000).toFixed(2)} s\n`);
  mirror.kill('SIGTERM');
  await new Promise((r) => mirror.on('exit', r));
} finally {
  await old.close();
  await Promise.all([oldEtcd.stop(), newEtcd.stop()]);
}
