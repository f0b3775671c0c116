// No false alarms under load (issue 20): the real binary audits every --interval seconds while a bounded load
// generator writes ~--rate operations/s to the mirrored prefix (puts, deletes, TTL keys and TTL refreshes, and
// directories on a v2 source; puts, deletes, lease keys, multi-key Txns and prefix deletes on a v3 source), and
// the mirror is restarted twice in the middle (SIGTERM; then SIGKILL, down for --down-seconds: longer than a copy
// of a lease or TTL key outlives its source key, so copies run out by themselves). Every audit result is collected
// from the mirror's log (all processes); an audit that reports a difference is a false alarm or a mirror defect.
//   npm run bench:audit-load -- [--scenarios v2-strict,v2-adaptive,v3,bridge] [--rate 1000] [--audits 10]
//                               [--interval 2] [--max-seconds 180] [--down-seconds 7]
// The load stops by itself: when the audits are counted, or after --max-seconds.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { EtcdClient } from '../src/etcd/v2/client.js';
import { V3Client } from '../src/etcd/v3/client.js';
import { parseCluster, parseEndpoint } from '../src/etcd/endpoint.js';
import { startEtcd } from '../src/etcd/process.js';
import { Mirror, type LogLine } from './lib/mirror.js';

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string', default: 'v2-strict,v2-adaptive,v3,bridge' },
    rate: { type: 'string', default: '1000' },
    audits: { type: 'string', default: '10' },
    interval: { type: 'string', default: '2' },
    'max-seconds': { type: 'string', default: '180' },
    'down-seconds': { type: 'string', default: '7' },
    bin: { type: 'string', default: 'dist-bench/bench/mirror-entry.js' },
  },
});
const RATE = Number(values.rate);
const AUDITS = Number(values.audits);
const MAX_MS = Number(values['max-seconds']) * 1000;
/** Unanswered operations at most: a due operation beyond is not sent (counted). */
const MAX_OUTSTANDING = 500;
const P = '/al';

interface Scenario {
  name: string;
  src: 'v2' | 'v3';
  dst: 'v2' | 'v3';
  flags: string[];
}
const SCENARIOS: Record<string, Scenario> = {
  'v2-strict': { name: 'v2 → v2 strict', src: 'v2', dst: 'v2', flags: ['--ordering', 'strict'] },
  'v2-adaptive': { name: 'v2 → v2 adaptive', src: 'v2', dst: 'v2', flags: ['--ordering', 'adaptive'] },
  // Txns of up to 40 source operations against 32 per destination Txn: some revisions are split.
  v3: { name: 'v3 → v3', src: 'v3', dst: 'v3', flags: ['--src-api', 'v3', '--dst-api', 'v3', '--dst-max-txn-ops', '32'] },
  bridge: { name: 'v2 → v3 bridge', src: 'v2', dst: 'v3', flags: ['--dst-api', 'v3'] },
};

type Op = () => Promise<unknown>;

/** The i-th operation of a v2 load: mostly puts, with deletes, TTL keys (expiring during the run, some refreshed
 * without an event), implicit and TTL directories and recursive deletes. */
function v2Op(c: EtcdClient, i: number): Op {
  const r = i % 100;
  const k = (n: number) => `${P}/load/k${n % 3000}`;
  if (r < 66) return () => c.put(k(i), { value: `v${i}` });
  if (r < 74) return () => c.delete(k(i * 7));
  if (r < 82) return () => c.put(`${P}/ttl/k${i % 400}`, { value: `t${i}`, ttl: 2 + (i % 3) });
  if (r < 86) return () => c.put(`${P}/ttl/k${(i * 3) % 400}`, { ttl: 3, refresh: true, prevExist: true });
  if (r < 94) return () => c.put(`${P}/dir${i % 40}/sub${i % 3}/x${i % 5}`, { value: `d${i}` });
  if (r < 96) return () => c.delete(`${P}/dir${(i * 3) % 40}`, { recursive: true, dir: true });
  if (r < 98) return () => c.put(`${P}/tdir${i % 20}`, { dir: true, ttl: 2 });
  return () => c.put(`${P}/tdir${(i * 7) % 20}/x`, { value: `td${i}` });
}

/** The i-th operation of a v3 load: puts, deletes, keys on short leases, multi-key Txns (some larger than a
 * destination Txn may carry), prefix deletes. */
function v3Op(c: V3Client, i: number, lease: () => string | null): Op {
  const r = i % 100;
  const b = (s: string) => Buffer.from(s);
  const k = (n: number) => b(`${P}/load/k${n % 3000}`);
  if (r < 70) return () => c.put(k(i), b(`v${i}`));
  if (r < 80) return () => c.deleteRange(k(i * 7));
  if (r < 90) {
    const id = lease();
    return () => c.put(b(`${P}/lease/k${i % 400}`), b(`l${i}`), id ? { lease: id } : {});
  }
  if (r < 97) return () => c.txn({ success: Array.from({ length: 5 }, (_, j) => ({ put: { key: b(`${P}/grp${i % 30}/x${j}`), value: b(`g${i}`) } })) });
  if (r < 98) return () => c.txn({ success: Array.from({ length: 40 }, (_, j) => ({ put: { key: b(`${P}/big/x${j}`), value: b(`B${i}`) } })) });
  const g = b(`${P}/grp${(i * 7) % 30}/`);
  const end = Buffer.from(g);
  end[end.length - 1]! += 1;
  return () => c.deleteRange(g, end);
}

/** Sends `next(i)` at `rate`/s on a fixed clock until `stop` resolves or `limitMs` passes. */
async function load(next: (i: number) => Op, rate: number, limitMs: number, stop: { stopped: boolean }) {
  const started = performance.now();
  let sent = 0;
  let due = 0;
  let outstanding = 0;
  let failed = 0;
  let notSent = 0;
  const errors = new Map<string, number>();
  while (!stop.stopped && performance.now() - started < limitMs) {
    const target = Math.floor(((performance.now() - started) * rate) / 1000);
    for (; due < target; due++) {
      if (outstanding >= MAX_OUTSTANDING) {
        notSent++;
        continue;
      }
      outstanding++;
      sent++;
      next(due)().then(
        () => outstanding--,
        (err: Error) => {
          outstanding--;
          failed++;
          const what = err.constructor.name;
          errors.set(what, (errors.get(what) ?? 0) + 1);
        },
      );
    }
    await sleep(10);
  }
  while (outstanding > 0) await sleep(10);
  const seconds = (performance.now() - started) / 1000;
  return { seconds, sent, failed, notSent, rate: Math.round(sent / seconds), errors: Object.fromEntries(errors) };
}

interface AuditLine {
  result: 'equal' | 'different' | 'aborted';
  atIndex?: number;
  keys?: number;
  inFlight?: number;
  differing?: number;
  listed?: unknown;
  reason?: string;
  pid: number;
}

/** Every audit outcome in a mirror log file (each process's lines follow its "# … spawn" line). */
function auditsInLog(file: string): AuditLine[] {
  const out: AuditLine[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    let l: LogLine;
    try {
      l = JSON.parse(line) as LogLine;
    } catch {
      continue;
    }
    const msg = String(l.msg ?? '');
    const pid = Number(l.pid);
    if (msg.startsWith('audit: the destination equals')) out.push({ result: 'equal', atIndex: l.atIndex as number, keys: l.keys as number, inFlight: l.inFlight as number, pid });
    else if (msg.startsWith('audit: the destination differs')) out.push({ result: 'different', atIndex: l.atIndex as number, differing: l.differing as number, listed: l.keys, inFlight: l.inFlight as number, pid });
    else if (msg.startsWith('audit aborted')) out.push({ result: 'aborted', reason: l.reason as string, pid });
  }
  return out;
}

async function scenario(s: Scenario): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'etcd-mirror-audit-load-'));
  const logFile = join(dir, 'mirror.log');
  // One after the other: two started at once were once given the same free port (and the second's readiness probe
  // answered by the first).
  const src = await startEtcd({ name: 'al-src' });
  const dst = await startEtcd({ name: 'al-dst' });
  const v2 = s.src === 'v2' ? new EtcdClient(parseEndpoint(src.clientUrl, 'src'), { connections: 64 }) : null;
  const v3 = s.src === 'v3' ? new V3Client(parseCluster(src.clientUrl, 'src')) : null;
  const args = [...s.flags, '--src-prefix', P, '--dst-prefix', P, '--strip', '--audit-interval', values.interval, src.clientUrl, dst.clientUrl];
  const durations: number[] = [];
  const restarts: string[] = [];
  let m: Mirror | null = null;
  const stop = { stopped: false };
  let leaseId: string | null = null;
  try {
    m = await Mirror.spawn(values.bin, ['--reload', ...args], logFile);
    if (!(await m.waitState((st) => st.state === 'tailing', 60_000))) throw new Error(`${s.name}: the mirror did not start tailing`);
    // v3: a new 3 s lease every second, so lease keys expire (and their copies go) all through the run.
    const leases = v3
      ? (async () => {
          while (!stop.stopped) {
            leaseId = (await v3.leaseGrant(3).catch(() => null))?.id ?? leaseId;
            await sleep(1_000);
          }
        })()
      : Promise.resolve();
    const next = v2 ? (i: number) => v2Op(v2, i) : (i: number) => v3Op(v3!, i, () => leaseId);
    const loading = load(next, RATE, MAX_MS, stop);
    const started = Date.now();
    const counted = () => auditsInLog(logFile).filter((a) => a.result !== 'aborted').length;
    let seen = 0;
    while (Date.now() - started < MAX_MS) {
      const st = await m.state().catch(() => null);
      const a = st?.audit as { lastAt: string | null; durationMs: number | null } | null | undefined;
      if (a?.lastAt && a.durationMs !== null && seen !== Date.parse(a.lastAt)) {
        seen = Date.parse(a.lastAt);
        durations.push(a.durationMs);
      }
      const n = counted();
      if (n >= AUDITS) break;
      // Restarts in the middle: a graceful one at a third of the audits, a SIGKILL at two thirds.
      const restartAt = restarts.length === 0 ? Math.ceil(AUDITS / 3) : restarts.length === 1 ? Math.ceil((2 * AUDITS) / 3) : Infinity;
      if (n >= restartAt) {
        const how = restarts.length === 0 ? 'SIGTERM' : 'SIGKILL';
        if (how === 'SIGTERM') await m.stop();
        else {
          m.kill();
          await m.exited;
          await sleep(Number(values['down-seconds']) * 1000);
        }
        restarts.push(`${how} after audit ${n} (exit ${m.exitCode ?? m.exitSignal})`);
        m = await Mirror.spawn(values.bin, args, logFile);
        seen = 0;
      }
      await sleep(250);
    }
    stop.stopped = true;
    const l = await loading;
    await leases;
    const audits = auditsInLog(logFile);
    const by = (r: string) => audits.filter((a) => a.result === r).length;
    const keys = audits.filter((a) => a.keys !== undefined).map((a) => a.keys!);
    const inFlight = audits.filter((a) => a.inFlight !== undefined).map((a) => a.inFlight!);
    const outOfWindow = (await m.metrics().catch(() => null))?.sums.get('etcdmirror_out_of_window_total');
    console.log(
      `${s.name}: load ${l.sent} ops in ${Math.round(l.seconds)} s (${l.rate}/s sent, ${l.failed} answered with an error ${JSON.stringify(l.errors)}, ${l.notSent} not sent); ` +
        `restarts: ${restarts.join(', ')}; audits: ${by('equal')} equal, ${by('different')} different, ${by('aborted')} aborted; ` +
        `durations ${durations.length ? `${Math.min(...durations)}–${Math.max(...durations)} ms` : 'n/a'} (from /state, ${durations.length} seen); ` +
        `keys ${keys.length ? `${Math.min(...keys)}–${Math.max(...keys)}` : 'n/a'}; in flight per audit ${inFlight.length ? `${Math.min(...inFlight)}–${Math.max(...inFlight)}` : 'n/a'}; ` +
        `out of window (last process) ${outOfWindow ?? 'n/a'}; log ${logFile}`,
    );
    for (const a of audits.filter((x) => x.result !== 'equal')) console.log(`  ${a.result} (pid ${a.pid}): ${JSON.stringify(a)}`);
  } finally {
    stop.stopped = true;
    await m?.stop();
    await Promise.all([v2?.close(), v3?.close()]);
    await Promise.all([src.stop(), dst.stop()]);
  }
}

for (const name of values.scenarios.split(',')) {
  const s = SCENARIOS[name];
  if (!s) throw new Error(`unknown scenario ${name} (${Object.keys(SCENARIOS).join(', ')})`);
  await scenario(s);
}
