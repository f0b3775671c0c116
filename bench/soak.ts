// Soak: a mirror between two local etcds under a steady write load for a long time (default 10 min at 500 put/s),
// sampling its RSS, open file descriptors and sockets (/proc) and its active timers and handles (/state) once a
// minute. A healthy process stays flat. Not part of the test run: `npm run soak [-- --minutes 10 --rate 500]`.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, request } from 'undici';
import { freePort, startEtcd } from '../src/etcd/process.js';

const { values } = parseArgs({
  options: { minutes: { type: 'string', default: '10' }, rate: { type: 'string', default: '500' }, bin: { type: 'string', default: 'bin/etcd-mirror.js' } },
});
const minutes = Number(values.minutes);
const rate = Number(values.rate);

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
function fds(pid: number): { fds: number; sockets: number } {
  const entries = readdirSync(`/proc/${pid}/fd`);
  let sockets = 0;
  for (const fd of entries) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets++;
    } catch {
      // closed meanwhile
    }
  }
  return { fds: entries.length, sockets };
}

const [src, dst] = await Promise.all([startEtcd({ name: 'soak-src' }), startEtcd({ name: 'soak-dst' })]);
const port = await freePort();
const mirror = spawn(process.execPath, [values.bin!, '--reload', '--port', String(port), '--listen-address', '127.0.0.1', '--src-prefix', '/soak', '--dst-prefix', '/soak', '--strip', src.clientUrl, dst.clientUrl], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
const pool = new Pool(src.clientUrl, { connections: 16 });
const state = async () => (await (await request(`http://127.0.0.1:${port}/state`)).body.json()) as Record<string, unknown>;
try {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await state()).state === 'tailing') break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  process.stderr.write(`soak: ${minutes} min at ${rate} put/s, mirror pid ${mirror.pid}\n`);
  const rows: string[] = ['minute  rss_MB  fds  sockets  timers  handles  lagEvents  state      writes'];
  const started = Date.now();
  let until = started + minutes * 60_000;
  // Ctrl-C ends the soak early but still prints the table and cleans up.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => (until = 0));
  let sent = 0;
  let failed = 0;
  let nextSample = started;
  let minute = 0;
  // Open loop: writes fall due on a fixed clock; at most 256 outstanding, the rest is counted as failed.
  let outstanding = 0;
  while (Date.now() < until) {
    const due = started + (sent + failed) * (1000 / rate);
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    if (outstanding >= 256) {
      failed++;
    } else {
      outstanding++;
      const i = sent++;
      pool
        .request({ method: 'PUT', path: `/v2/keys/soak/k${i % 2000}`, body: `value=${i}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } })
        .then((r) => r.body.dump(), () => failed++)
        .finally(() => outstanding--);
    }
    if (Date.now() >= nextSample) {
      const s = await state();
      const resources = (s.resources ?? {}) as Record<string, number>;
      const timers = resources.Timeout ?? 0;
      const handles = Object.values(resources).reduce((a, b) => a + b, 0);
      const f = fds(mirror.pid!);
      rows.push(
        [String(minute).padStart(6), rssMb(mirror.pid!).toFixed(1).padStart(7), String(f.fds).padStart(4), String(f.sockets).padStart(8), String(timers).padStart(7), String(handles).padStart(8), String(s.lagEvents).padStart(10), String(s.state).padEnd(10), String(sent).padStart(7)].join('  '),
      );
      process.stderr.write(rows[rows.length - 1] + '\n');
      minute++;
      nextSample = started + minute * 60_000;
    }
  }
  await sleep(2_000);
  process.stdout.write(`soak ${new Date().toISOString()}: ${minutes} min, ${rate} put/s, ${sent} writes sent, ${failed} not sent or failed\n${rows.join('\n')}\n`);
} finally {
  mirror.kill('SIGTERM');
  await pool.close();
  await Promise.all([src.stop(), dst.stop()]);
}
