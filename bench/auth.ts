// `npm run bench -- --auth password|cert`: the mirror against auth-enabled etcds (v2 auth on, guest revoked but for
// the load generators' prefix), side by side for three identities in one run — none, a password (checked with
// bcrypt on every request) and a client certificate whose CN is the user (TLS, --client-cert-auth). For each:
// the destination's write ceiling for that identity (one at a time, 16 in flight), the mirror's applied rate and
// lag through stepped source rates behind a WAN delay, and a backlog catch-up. `--auth` picks which of the two
// authenticated identities also runs the higher steps. A benchmark: it measures and reports, it asserts nothing.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool, request, type Dispatcher } from 'undici';
import { enableAuth, startEtcd, type EtcdProcess } from '../src/etcd/process.js';
import { makePki, type Pki } from '../test/helpers/certs.js';
import { put } from './lib/etcd-http.js';
import { Mirror } from './lib/mirror.js';
import { startDelayProxy, type DelayProxy } from './lib/workers.js';

type Identity = 'none' | 'password' | 'cert';

const HELP = `usage: npm run bench -- --auth password|cert [--rtt-ms N] [--step-seconds N] [--backlog N] [--out DIR]

  --auth KIND          the authenticated identity that runs every step (the other runs the low ones);
                       both, and no auth, are measured side by side
  --rtt-ms N           round trip added between the mirror and the source (default 30)
  --step-seconds N     length of each rate step (default 8)
  --backlog N          events written while the mirror is stopped, then caught up (default 900)
  --out DIR            results directory (default bench/results)
`;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = fileURLToPath(new URL('./mirror-entry.js', import.meta.url));
const PASSWORD = 'bench-mirror-password';
const PREFIX = '/bench';
const INDEX_KEY = '/__replication/bench';
/** Outside the mirrored prefix: the ceiling's keys are not the replica's. */
const CEILING = '/ceiling';
const ALL_RATES = [10, 100, 1000];
const SETTLE_MS = 30_000;

interface Cluster {
  etcd: EtcdProcess;
  /** What the mirror and the ceiling writer use (with the identity). */
  url: string;
  /** Anonymous access (guest): load generators and readers. */
  guestUrl: string;
  dispatcher: Dispatcher;
}

interface Setup {
  src: Cluster;
  dst: Cluster;
  /** Flags that give the mirror its identity on both sides. */
  mirrorFlags: string[];
  stop(): Promise<void>;
}

interface StepResult {
  offeredPerSecond: number;
  sentPerSecond: number;
  appliedPerSecond: number;
  lagAtEnd: number;
  caughtUpMs: number | null;
  states: string[];
}

interface IdentityResult {
  identity: Identity;
  writeCeiling: { oneAtATime: number; sixteenInFlight: number };
  costMs: number | null;
  steps: StepResult[];
  backlog: { events: number; ms: number | null; perSecond: number | null };
}

async function setUp(identity: Identity, pki: Pki, tmp: string): Promise<Setup> {
  const tls = identity === 'cert'
    ? { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: true, probeCertFile: pki.clientCert, probeKeyFile: pki.clientKey }
    : undefined;
  const [src, dst] = await Promise.all([
    startEtcd({ name: `auth-${identity}-src`, tls, plainListener: tls !== undefined }),
    startEtcd({ name: `auth-${identity}-dst`, tls, plainListener: tls !== undefined }),
  ]);
  const certs = identity === 'cert' ? { src: pki.clientFor('mirror-src'), dst: pki.clientFor('mirror-dst') } : undefined;
  if (identity !== 'none') {
    const setupTls = tls ? { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } : undefined;
    const password = identity === 'password' ? PASSWORD : undefined;
    await enableAuth(src.clientUrl, {
      rootPassword: 'bench-root',
      users: [{ user: identity === 'cert' ? 'mirror-src' : 'mirror', password, read: [`${PREFIX}*`], write: [] }],
      guest: { read: [`${PREFIX}*`], write: [`${PREFIX}*`] },
      tls: setupTls,
    });
    await enableAuth(dst.clientUrl, {
      rootPassword: 'bench-root',
      users: [{ user: identity === 'cert' ? 'mirror-dst' : 'mirror', password, read: [`${PREFIX}*`, '/__replication*', `${CEILING}*`], write: [`${PREFIX}*`, '/__replication*', `${CEILING}*`] }],
      guest: { read: [`${PREFIX}*`, '/__replication*'], write: [] },
      tls: setupTls,
    });
  }
  const cluster = (e: EtcdProcess, side: 'src' | 'dst'): Cluster => {
    if (identity === 'cert') {
      const c = certs![side];
      return { etcd: e, url: e.clientUrl, guestUrl: e.plainUrl!, dispatcher: new Pool(e.clientUrl, { connections: 16, connect: { ca: readFileSync(pki.ca), cert: readFileSync(c.cert), key: readFileSync(c.key) } }) };
    }
    const url = identity === 'password' ? e.clientUrl.replace('http://', 'http://mirror@') : e.clientUrl;
    return { etcd: e, url, guestUrl: e.clientUrl, dispatcher: new Pool(e.clientUrl, { connections: 16 }) };
  };
  let mirrorFlags: string[] = [];
  if (identity === 'password') {
    const file = path.join(tmp, 'password');
    writeFileSync(file, PASSWORD, { mode: 0o600 });
    mirrorFlags = ['--src-password-file', file, '--dst-password-file', file];
  } else if (identity === 'cert') {
    for (const side of ['src', 'dst'] as const) mirrorFlags.push(`--${side}-ca`, pki.ca, `--${side}-cert`, certs![side].cert, `--${side}-key`, certs![side].key);
  }
  const s = { src: cluster(src, 'src'), dst: cluster(dst, 'dst') };
  return {
    ...s,
    mirrorFlags,
    async stop() {
      await Promise.all([s.src.dispatcher.close(), s.dst.dispatcher.close()]);
      await Promise.all([src.stop(), dst.stop()]);
    },
  };
}

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

/** The destination's write ceiling for the mirror's identity: writes/s one at a time and with 16 in flight, 3 s each. */
async function writeCeiling(setup: Setup, identity: Identity): Promise<IdentityResult['writeCeiling']> {
  const auth: Record<string, string> = identity === 'password' ? { authorization: 'Basic ' + Buffer.from(`mirror:${PASSWORD}`).toString('base64') } : {};
  const run = async (inFlight: number) => {
    const until = performance.now() + 3_000;
    let n = 0;
    await Promise.all(Array.from({ length: inFlight }, async (_, w) => {
      while (performance.now() < until) await put(setup.dst.dispatcher, `${CEILING}/w${w}`, String(n++), 10_000, auth);
    }));
    return Math.round(n / 3);
  };
  return { oneAtATime: await run(1), sixteenInFlight: await run(16) };
}

async function storedIndex(dst: Cluster): Promise<number> {
  const res = await request(`${dst.guestUrl}/v2/keys${INDEX_KEY}`);
  const body = (await res.body.json()) as { node?: { value?: string } };
  return Number(body.node?.value ?? 0);
}

async function sourceIndex(src: Cluster): Promise<number> {
  const res = await request(`${src.guestUrl}/v2/keys${PREFIX}`);
  await res.body.text();
  return Number(res.headers['x-etcd-index']);
}

/** Anonymous writes to the source at `perSecond` for `ms` (16 connections; a write due while 256 are unanswered is skipped). */
async function offer(src: Cluster, perSecond: number, ms: number): Promise<number> {
  const pool = new Pool(src.guestUrl, { connections: 16 });
  const start = performance.now();
  let sent = 0;
  let failed = 0;
  let outstanding = 0;
  const writes: Promise<void>[] = [];
  for (let i = 0; ; i++) {
    const due = start + (i * 1000) / perSecond;
    if (due - start >= ms) break;
    if (due > performance.now()) await sleep(due - performance.now());
    if (outstanding >= 256) continue;
    outstanding++;
    sent++;
    writes.push(
      pool
        .request({ method: 'PUT', path: `/v2/keys${PREFIX}/load/k${i % 1000}`, headers: FORM, body: `value=v${i}` })
        .then(async (r) => {
          await r.body.text();
          if (r.statusCode >= 300) failed++;
        })
        .catch(() => void failed++)
        .finally(() => void outstanding--),
    );
  }
  await Promise.all(writes);
  await pool.close();
  if (failed > 0) throw new Error(`${failed} of ${sent} load writes failed`);
  return sent;
}

async function startMirror(setup: Setup, proxy: DelayProxy, logFile: string, reload: boolean): Promise<Mirror> {
  const srcUrl = new URL(setup.src.url);
  const viaProxy = `${srcUrl.protocol}//${srcUrl.username ? `${srcUrl.username}@` : ''}127.0.0.1:${proxy.port}`;
  const args = [...(reload ? ['--reload'] : []), '--src-prefix', PREFIX, '--dst-prefix', PREFIX, '--strip', ...setup.mirrorFlags, viaProxy, setup.dst.url];
  const m = await Mirror.spawn(BIN, args, logFile);
  if (!(await m.waitState((s) => s.state === 'tailing', 60_000))) throw new Error(`mirror not tailing after 60 s: ${m.stderrText.slice(0, 300)}`);
  return m;
}

async function caughtUp(setup: Setup, target: number, timeoutMs: number): Promise<number | null> {
  const at = performance.now();
  while (performance.now() - at < timeoutMs) {
    if ((await storedIndex(setup.dst)) >= target) return performance.now() - at;
    await sleep(50);
  }
  return null;
}

async function measure(identity: Identity, rates: number[], opts: { rttMs: number; stepMs: number; backlog: number; pki: Pki; tmp: string; logDir: string }): Promise<IdentityResult> {
  process.stderr.write(`bench auth: ${identity}\n`);
  const setup = await setUp(identity, opts.pki, opts.tmp);
  // TLS passes the TCP proxy untouched; a certificate's name is checked against 127.0.0.1, which the proxy is.
  const proxy = await startDelayProxy({ host: '127.0.0.1', port: Number(new URL(setup.src.etcd.clientUrl).port) }, opts.rttMs / 2);
  const logFile = path.join(opts.logDir, `mirror-auth-${identity}.log`);
  try {
    const ceiling = await writeCeiling(setup, identity);
    const guest = new Pool(setup.src.guestUrl);
    await put(guest, `${PREFIX}/seed`, 'seed');
    let m = await startMirror(setup, proxy, logFile, true);
    const measured = await m.waitState((s) => (s.auth as { destination: { costMs: number | null } } | undefined)?.destination.costMs !== null, 30_000);
    const costMs = (measured?.auth as { destination: { costMs: number | null } } | undefined)?.destination.costMs ?? null;
    const steps: StepResult[] = [];
    for (const rate of rates) {
      process.stderr.write(`bench auth: ${identity} at ${rate}/s\n`);
      const states = new Set<string>();
      const watch = setInterval(() => void m.state().then((s) => states.add(s.state), () => {}), 200);
      const before = await storedIndex(setup.dst);
      const sent = await offer(setup.src, rate, opts.stepMs);
      const after = await storedIndex(setup.dst);
      const top = await sourceIndex(setup.src);
      const settled = await caughtUp(setup, top, SETTLE_MS);
      clearInterval(watch);
      steps.push({
        offeredPerSecond: rate,
        sentPerSecond: Math.round(sent / (opts.stepMs / 1000)),
        appliedPerSecond: Math.round((after - before) / (opts.stepMs / 1000)),
        lagAtEnd: top - after,
        caughtUpMs: settled === null ? null : Math.round(settled),
        states: [...states],
      });
      if (settled === null) {
        // Not caught up within the settle time: a fresh mirror (reconciling) for the next step.
        await m.stop();
        m = await startMirror(setup, proxy, logFile, true);
      }
    }
    await m.stop();
    for (let i = 0; i < opts.backlog; i++) await put(guest, `${PREFIX}/backlog/k${i % 100}`, `b${i}`);
    await guest.close();
    const target = await sourceIndex(setup.src);
    const started = performance.now();
    m = await startMirror(setup, proxy, logFile, false);
    const rest = await caughtUp(setup, target, 180_000);
    const ms = rest === null ? null : Math.round(performance.now() - started);
    await m.stop();
    return { identity, writeCeiling: ceiling, costMs, steps, backlog: { events: opts.backlog, ms, perSecond: ms ? Math.round(opts.backlog / (ms / 1000)) : null } };
  } finally {
    await proxy.close();
    await setup.stop();
  }
}

function table(results: IdentityResult[]): string {
  const col = (r: IdentityResult) => ({ none: 'no auth', password: 'password', cert: 'certificate (CN)' })[r.identity];
  const rows: [string, ...string[]][] = [
    ['', ...results.map(col)],
    ['measured cost per request (ms)', ...results.map((r) => String(r.costMs ?? '?'))],
    ['destination writes/s, one at a time', ...results.map((r) => String(r.writeCeiling.oneAtATime))],
    ['destination writes/s, 16 in flight', ...results.map((r) => String(r.writeCeiling.sixteenInFlight))],
  ];
  for (const rate of ALL_RATES) {
    rows.push([
      `mirror at ${rate}/s offered: applied/s, lag at end, caught up`,
      ...results.map((r) => {
        const s = r.steps.find((x) => x.offeredPerSecond === rate);
        return s ? `${s.appliedPerSecond}/s, ${s.lagAtEnd}, ${s.caughtUpMs === null ? 'no (30 s)' : `${(s.caughtUpMs / 1000).toFixed(1)} s`}${s.states.some((x) => x !== 'tailing') ? ` [${s.states.join(',')}]` : ''}` : '(not run)';
      }),
    ]);
  }
  rows.push([`backlog catch-up (events/s)`, ...results.map((r) => (r.backlog.perSecond === null ? 'not in 180 s' : `${r.backlog.perSecond} (${r.backlog.events} in ${((r.backlog.ms ?? 0) / 1000).toFixed(1)} s)`))]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`).join('\n');
}

export async function runAuthBench(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { auth: { type: 'string' }, 'rtt-ms': { type: 'string' }, 'step-seconds': { type: 'string' }, backlog: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const chosen = values.auth;
  if (chosen !== 'password' && chosen !== 'cert') {
    process.stderr.write(`bench: --auth: expected password or cert\n${HELP}`);
    return 2;
  }
  const number = (raw: string | undefined, dflt: number) => (raw === undefined ? dflt : Number(raw));
  const opts = { rttMs: number(values['rtt-ms'], 30), stepMs: number(values['step-seconds'], 8) * 1000, backlog: number(values.backlog, 900) };
  const out = path.resolve(ROOT, values.out ?? 'bench/results');
  mkdirSync(out, { recursive: true });
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'etcd-mirror-bench-auth-'));
  const pki = makePki();
  const started = new Date();
  try {
    const results: IdentityResult[] = [];
    for (const identity of ['none', 'password', 'cert'] as const) {
      // The unchosen authenticated identity runs the low steps only: above its ceiling every step is a recovery.
      const rates = identity === 'none' || identity === chosen ? ALL_RATES : ALL_RATES.slice(0, 2);
      results.push(await measure(identity, rates, { ...opts, pki, tmp, logDir: out }));
    }
    const header = `etcd-mirror auth bench, ${started.toISOString()}, ${os.cpus().length} cores, RTT ${opts.rttMs} ms, steps of ${opts.stepMs / 1000} s, --auth ${chosen}`;
    const text = `${header}\n\n${table(results)}\n`;
    process.stdout.write(text);
    const file = path.join(out, `${started.toISOString().replace(/[:.]/g, '-')}-auth-${chosen}.json`);
    writeFileSync(file, JSON.stringify({ started: started.toISOString(), cores: os.cpus().length, ...opts, auth: chosen, results }, null, 2));
    process.stderr.write(`bench auth: results in ${file}\n`);
    return 0;
  } finally {
    pki.cleanup();
  }
}
