// `node dist-bench/bench/v3-backlog-memory.js [--events N] [--bin PATH]`: the v3 → v3 mirror's memory while it
// replays a backlog far larger than its read-ahead (the state in which every buffer between the source watch and
// the destination Txn is full, whatever the machine's speed), and where its time goes from "tailing" to caught up.
// A benchmark, not a test: it measures and prints.
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseCluster } from '../src/etcd/endpoint.js';
import { startEtcd } from '../src/etcd/process.js';
import { V3Client } from '../src/etcd/v3/client.js';
import { Mirror } from './lib/mirror.js';
import { startDelayProxy } from './lib/workers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const { values: v } = parseArgs({
  options: {
    events: { type: 'string' },
    bin: { type: 'string' },
    'value-bytes': { type: 'string' },
    'sustained-seconds': { type: 'string' },
    'reload-keys': { type: 'string' },
    'rtt-ms': { type: 'string' },
    compact: { type: 'boolean' },
  },
});
const reloadKeys = Number(v['reload-keys'] ?? 0);
const rttMs = Number(v['rtt-ms'] ?? 0);
const sustainedSeconds = Number(v['sustained-seconds'] ?? 0);
const events = Number(v.events ?? 100_000);
const valueBytes = Number(v['value-bytes'] ?? 100);
const bin = path.resolve(ROOT, v.bin ?? 'dist-bench/bench/mirror-entry.js');

const rssMb = (pid: number): number | null => {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Math.round(Number(kb) / 102.4) / 10 : null;
  } catch {
    return null;
  }
};

/** utime + stime of a process, in ms. */
const cpuMs = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // CLK_TCK is 100 on Linux
};

const [src, dst] = await Promise.all([startEtcd({ name: 'mem-src' }), startEtcd({ name: 'mem-dst' })]);
const srcClient = new V3Client(parseCluster(src.clientUrl, 'source'));
// --rtt-ms: the mirror reads the source through the bench's delay proxy (RTT/2 each way), as in the v3 bench.
const srcUrl = new URL(src.clientUrl);
const proxy = rttMs > 0 ? await startDelayProxy({ host: srcUrl.hostname, port: Number(srcUrl.port) }, rttMs / 2) : null;
const mirrorSource = proxy?.url ?? src.clientUrl;
const logDir = mkdtempSync(path.join(os.tmpdir(), 'etcd-mirror-bench-mem-'));
const args = ['--src-api', 'v3', '--dst-api', 'v3', '--src-prefix', '/bench', '--dst-prefix', '/bench', '--strip'];
let mirror: Mirror | null = null;
let value = Buffer.alloc(0);
let heapOf: () => Promise<{ heap: number; total: number; external: number; spaces: string }> = async () => ({ heap: 0, total: 0, external: 0, spaces: '' });
try {
  await srcClient.put(Buffer.from('/bench/load/0'), Buffer.from('x'));
  // --reload-keys: the first start reconciles that many keys into an empty destination (a snapshot resync).
  let next0 = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next0 < reloadKeys) await srcClient.put(Buffer.from(`/bench/reload/k${next0++}`), Buffer.alloc(valueBytes, 'r'));
    }),
  );
  if (reloadKeys > 0) {
    // A first --reload fills the destination, so that the measured one compares two full trees, as a resync does.
    const fill = await Mirror.spawn(bin, ['--reload', ...args, mirrorSource, dst.clientUrl], path.join(logDir, 'mirror-0.log'));
    if (!(await fill.waitState((s) => s.state === 'tailing', 120_000))) throw new Error('not tailing');
    await fill.stop();
  }
  mirror = await Mirror.spawn(bin, ['--reload', ...args, mirrorSource, dst.clientUrl], path.join(logDir, 'mirror-1.log'));
  const first = mirror;
  let reloadRss = 0;
  let reloadHeap = 0;
  const r0 = performance.now();
  while (first.alive && performance.now() - r0 < 120_000) {
    reloadRss = Math.max(reloadRss, rssMb(first.pid) ?? 0);
    const snap = await first.metrics().catch(() => null);
    reloadHeap = Math.max(reloadHeap, (snap?.sums.get('etcdmirror_process_nodejs_heap_size_used_bytes') ?? 0) / 2 ** 20);
    if ((await first.state().catch(() => null))?.state === 'tailing') break;
    await sleep(50);
  }
  if (!(await mirror.waitState((s) => s.state === 'tailing', 60_000))) throw new Error('not tailing');
  if (reloadKeys > 0) {
    process.stdout.write(`--reload of ${reloadKeys} keys onto a destination holding them: ${Math.round(performance.now() - r0)} ms to tailing, RSS max ${reloadRss} MB, heap used max ${reloadHeap.toFixed(1)} MB\n`);
  }
  await mirror.stop();
  value = Buffer.alloc(valueBytes, 'v');
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < events) await srcClient.put(Buffer.from(`/bench/load/k${next++}`), value);
    }),
  );
  const target = (await srcClient.status()).revision;
  process.stderr.write(`${events} puts in ${((performance.now() - t0) / 1000).toFixed(1)} s; source revision ${target}\n`);
  // The source side's floor: a bare watch from the mirror's resume point, timed until it has delivered everything.
  const fromRevision = target - events + 1;
  const w0 = performance.now();
  const bare = srcClient.watch(Buffer.from('/bench/'), Buffer.from('/bench0'), { startRevision: fromRevision });
  let seen = 0;
  let messages = 0;
  for await (const msg of bare) {
    if (msg.kind !== 'events') continue;
    messages++;
    seen += msg.events.length;
    if (msg.events[msg.events.length - 1]!.kv.modRevision >= target) break;
  }
  bare.close();
  process.stderr.write(`a bare watch from revision ${fromRevision}: ${seen} events in ${messages} messages, ${Math.round(performance.now() - w0)} ms\n`);
  const spawned = performance.now();
  mirror = await Mirror.spawn(bin, [...args, mirrorSource, dst.clientUrl], path.join(logDir, 'mirror-2.log'));
  const m = mirror;
  let maxRss = 0;
  let maxHeap = 0;
  let maxExternal = 0;
  let tailingAt: number | null = null;
  let doneAt: number | null = null;
  let atMaxRss = '';
  heapOf = async () => {
    const snap = await mirror!.metrics().catch(() => null);
    const g = (n: string) => (snap?.sums.get(`etcdmirror_process_nodejs_${n}`) ?? 0) / 2 ** 20;
    const spaces = [...(snap?.labelled.get('etcdmirror_process_nodejs_heap_space_size_total_bytes') ?? [])]
      .map(([l, b]) => `${/space="([^"]+)"/.exec(l)?.[1]} ${(b / 2 ** 20).toFixed(1)}`)
      .join(', ');
    return { heap: g('heap_size_used_bytes'), total: g('heap_size_total_bytes'), external: g('external_memory_bytes'), spaces };
  };
  while (performance.now() - spawned < 300_000 && m.alive) {
    const r = rssMb(m.pid) ?? 0;
    maxRss = Math.max(maxRss, r);
    const s = await m.state().catch(() => null);
    if (s?.state === 'tailing' && tailingAt === null) tailingAt = performance.now();
    if (s?.state === 'tailing' && (s.appliedIndex ?? -1) >= target) {
      doneAt = performance.now();
      break;
    }
    const h = await heapOf();
    if (r >= maxRss) atMaxRss = `at the RSS maximum: heap used ${h.heap.toFixed(1)} of ${h.total.toFixed(1)} MB (spaces, MB allocated: ${h.spaces}), external ${h.external.toFixed(1)} MB, queue ${s?.queue ?? '–'}`;
    maxHeap = Math.max(maxHeap, h.heap);
    maxExternal = Math.max(maxExternal, h.external);
    await sleep(100);
  }
  process.stdout.write(
    `backlog ${events} events of ${valueBytes} B: RSS max ${maxRss} MB, heap used max ${maxHeap.toFixed(1)} MB, external max ${maxExternal.toFixed(1)} MB; ` +
      `spawn → /state tailing ${tailingAt === null ? '–' : Math.round(tailingAt - spawned)} ms, spawn → caught up ${doneAt === null ? 'never' : Math.round(doneAt - spawned)} ms, ` +
      `/state tailing → caught up ${doneAt !== null && tailingAt !== null ? Math.round(doneAt - tailingAt) : '–'} ms; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n${atMaxRss}\n`,
  );
  if (v.compact && mirror.alive) {
    // As the v3 bench's compaction phase: stopped, 1,000 puts, the source compacted past the mirror's checkpoint,
    // started again (it resyncs from a snapshot by itself); the sustained load below starts as soon as it tails.
    await mirror.stop();
    for (let i = 0; i < 1000; i++) await srcClient.put(Buffer.from(`/bench/load/c${i}`), value);
    await srcClient.compact((await srcClient.status()).revision);
    const c0 = performance.now();
    mirror = await Mirror.spawn(bin, [...args, mirrorSource, dst.clientUrl], path.join(logDir, 'mirror-3.log'));
    let cRss = 0;
    while (mirror.alive && performance.now() - c0 < 120_000) {
      cRss = Math.max(cRss, rssMb(mirror.pid) ?? 0);
      const st = await mirror.state().catch(() => null);
      if (st?.state === 'tailing' && (st.appliedIndex ?? -1) >= (await srcClient.status()).revision) break;
      await sleep(50);
    }
    process.stdout.write(`compaction restart: resynced and tailing after ${Math.round(performance.now() - c0)} ms, RSS max ${cRss} MB\n`);
  }
  if (sustainedSeconds > 0 && mirror.alive) {
    // Then the mirror tailing a source written as fast as 64 puts in flight allow.
    const m2 = mirror;
    let stop = false;
    let puts = 0;
    const writers = Array.from({ length: 64 }, async () => {
      while (!stop) {
        await srcClient.put(Buffer.from(`/bench/load/s${puts++ % 50_000}`), value);
      }
    });
    const t1 = performance.now();
    const rev1 = (await srcClient.status()).revision;
    const cpu1 = cpuMs(m2.pid);
    let max = 0;
    let at = '';
    let snapshotTaken = false;
    while (performance.now() - t1 < sustainedSeconds * 1000) {
      await sleep(250);
      // With NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2 the mirror writes a heap snapshot into its working directory.
      if (process.env.SNAPSHOT_MIRROR && !snapshotTaken && performance.now() - t1 > (sustainedSeconds * 1000) / 2) {
        snapshotTaken = true;
        process.kill(m2.pid, 'SIGUSR2');
      }
      const r = rssMb(m2.pid) ?? 0;
      if (r >= max) {
        max = r;
        const h = await heapOf();
        const s = await m2.state().catch(() => null);
        at = `heap used ${h.heap.toFixed(1)} of ${h.total.toFixed(1)} MB (${h.spaces}), external ${h.external.toFixed(1)} MB, queue ${s?.queue ?? '–'}`;
      }
    }
    stop = true;
    await Promise.all(writers);
    const secs = (performance.now() - t1) / 1000;
    const target2 = (await srcClient.status()).revision;
    const caught = await m2.waitState((s) => (s.appliedIndex ?? -1) >= target2, 60_000);
    const cpuPerEvent = ((cpuMs(m2.pid) - cpu1) * 1000) / Math.max(1, target2 - rev1);
    process.stdout.write(
      `sustained ${sustainedSeconds} s, 64 puts in flight: ${Math.round(puts / secs)} put/s at the source; mirror RSS max ${max} MB (${at}); ` +
        `caught up ${caught ? 'yes' : 'no'}; mirror CPU ${Math.round(cpuPerEvent)} µs per event; RSS after ${rssMb(m2.pid)} MB, ` +
        `after 15 s idle ${await sleep(15_000).then(() => rssMb(m2.pid))} MB (heap used ${(await heapOf()).heap.toFixed(1)} MB); load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`,
    );
  }
} finally {
  await mirror?.stop();
  await srcClient.close();
  await proxy?.close();
  await Promise.all([src.stop(), dst.stop()]);
}
process.exit(0);
