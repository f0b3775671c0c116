// Authenticated clusters (real etcd, v2 auth on, guest revoked): a destination written with a password (etcd
// checks it with bcrypt on every request) — replication correct and in order, the cost measured and said once,
// the lag growth it causes said once; a password-authenticated source under a busy store — the mirror's
// authenticated requests counted through a proxy stay within the budget while the quiet prefix stays inside the
// window, and with a budget too small for the store's rate the mirror says so before the window is lost;
// certificate identities on both sides (TLS, --client-cert-auth, CN = user): full replication, no password.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, Pool, request } from 'undici';
import { enableAuth, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { EtcdClient } from '../../src/etcd/v2/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { runMirror, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { changesOf, checkOrder, recordEvents, type EventLog } from '../helpers/oracle.js';
import { dumpTree, expectTreesEqual } from '../helpers/tree.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { sleep } from '../helpers/raw.js';

const ROOT_PW = 'root-Secret-7f3a9';
const MIRROR_PW = 'mirror-Secret-91c2e';
const INDEX_KEY = '/__replication/conftool';
const COMMON = ['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip'];

let tmp: string;
const mirrors: MirrorProcess[] = [];
const recorders: EventLog[] = [];

beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'etcd-mirror-auth-'));
});
afterEach(async () => {
  await Promise.all(recorders.splice(0).map((r) => r.stop()));
  await Promise.all(mirrors.splice(0).map((m) => m.kill('SIGKILL')));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function passwordFile(name: string, password: string): string {
  const file = path.join(tmp, name);
  writeFileSync(file, password + '\n', { mode: 0o600 });
  return file;
}

/** The process list's view of a process: what `ps` shows every local user. */
const cmdline = (pid: number): string => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');

/** Everything the daemon shows: its pages and its logs. */
async function everythingShown(m: MirrorProcess): Promise<string> {
  const base = `http://127.0.0.1:${m.port}`;
  const pages = await Promise.all(['/state', '/ui', '/metrics', '/lag', '/readyz', '/healthz', '/'].map(async (p) => (await request(base + p)).body.text()));
  return [...pages, m.stderr(), JSON.stringify(m.logs), cmdline(m.proc.pid!)].join('\n');
}

const auth = (s: Record<string, unknown>) => s.auth as Record<'source' | 'destination', Record<string, unknown>>;
const transitionsTo = (m: MirrorProcess, states: string[]) => m.logs.filter((l) => states.includes(String(l.to)));

/**
 * Anonymous writes (guest may write there) at `perSecond` with 16 in flight, until `until()` says so or `maxWrites`
 * are sent: the load of a busy store that pays no password check itself.
 */
async function anonymousLoad(baseUrl: string, prefix: string, opts: { perSecond: number; maxWrites: number; until?: () => boolean }) {
  const pool = new Pool(baseUrl, { connections: 16 });
  const startedAt = performance.now();
  let next = 0;
  let written = 0;
  const errors: string[] = [];
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= opts.maxWrites || opts.until?.()) return;
      const due = startedAt + (i * 1000) / opts.perSecond;
      if (due > performance.now()) await sleep(due - performance.now());
      const res = await pool.request({ method: 'PUT', path: `/v2/keys${prefix}/k${i % 500}`, body: `value=v${i}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      await res.body.text();
      if (res.statusCode < 300) written++;
      else if (errors.length < 5) errors.push(`HTTP ${res.statusCode}`);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await pool.close();
  const seconds = (performance.now() - startedAt) / 1000;
  return { writes: written, seconds, errors };
}

describe('password auth on the destination', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair();
    await enableAuth(pair.dst.clientUrl, {
      rootPassword: ROOT_PW,
      users: [{ user: 'mirror', password: MIRROR_PW, read: ['/conftool*', '/__replication*'], write: ['/conftool*', '/__replication*'] }],
      // The test's own reads and its event recorder are anonymous: only the mirror pays the password check.
      guest: { read: ['/conftool*', '/__replication*'], write: [] },
    });
  });
  afterAll(async () => pair?.stop());

  it('replicates in order, measures the cost, says so once at start and once when the lag grows because of it', async () => {
    for (let i = 0; i < 20; i++) await pair.srcClient.put(`/conftool/seed/k${i}`, { value: `seed-${i}` });
    const dstUrl = pair.dst.clientUrl.replace('http://', 'http://mirror@');
    // Growth over 2 s instead of 10: the same warning, from a smaller backlog that takes less time to catch up.
    const m = await spawnMirror(['--reload', '--ordering', 'strict', '--lag-growth-ms', '2000', ...COMMON, '--dst-password-file', passwordFile('dst.pw', MIRROR_PW), pair.src.clientUrl, dstUrl]);
    mirrors.push(m);
    await m.waitForState('tailing', 60_000);
    const startWarning = (l: Record<string, unknown>) => String(l.msg).startsWith('destination uses password auth');
    await m.waitForLog(startWarning, 30_000);
    const measured = await m.waitForState((s) => auth(s).destination.costMs !== null);
    const cost = auth(measured).destination;
    expect(cost).toMatchObject({ auth: 'password', expensive: true, limiting: false });
    expect(cost.costMs as number).toBeGreaterThan(10);
    expect(String(cost.message)).toMatch(/^destination uses password auth: ~\d+ ms of server time per request .*ceiling ~\d+ writes\/s .*CN=mirror lifts it$/);
    expect(auth(measured).source).toMatchObject({ auth: 'none', message: null });
    expect(await m.metrics()).toMatch(/^etcdmirror_request_cost_seconds\{side="destination"\} 0\.\d+/m);

    // Caught up: from here both logs are complete and the destination tree is where the destination log starts.
    const seeded = await pair.srcClient.put('/conftool/seed/done', { value: 'seeded' });
    await waitForIndex(pair.dstClient, INDEX_KEY, seeded.etcdIndex, 30_000);
    const srcLog = await recordEvents(pair.src.clientUrl, '/conftool');
    const dstLog = await recordEvents(pair.dst.clientUrl, '/conftool');
    recorders.push(srcLog, dstLog);
    const initial = await dumpTree(pair.dstClient, '/conftool');

    // Three times what one connection gets at the measured cost: more than the destination accepts from us, so the
    // lag grows — until the mirror says why (or a bound, so that the test ends either way; the lag is kept well
    // inside the window, where strict order holds).
    const ceiling = cost.ceilingPerSecond as number;
    let lagWarning: Record<string, unknown> | undefined;
    let lag = 0;
    const lagWatch = (async () => {
      while (!lagWarning) {
        lag = Number((await m.state()).lagEvents ?? 0);
        lagWarning = m.logs.find((l) => String(l.msg).startsWith('lag growing'));
        await sleep(100);
      }
    })();
    const load = await anonymousLoad(pair.src.clientUrl, '/conftool/load', { perSecond: Math.max(40, ceiling * 3), maxWrites: 3_000, until: () => lagWarning !== undefined || lag > 400 });
    expect(load.errors).toEqual([]);
    expect(lagWarning, `lag ${lag} after ${load.writes} writes in ${load.seconds.toFixed(1)} s`).toBeDefined();
    await lagWatch;
    expect(String(lagWarning!.msg)).toMatch(/^lag growing \(\d+ events, \d+ events\/s applied\): destination uses password auth: .*CN=mirror lifts it$/);
    const during = await m.state();
    console.log(`auth: destination password cost ${String(cost.costMs)} ms/request; load ${load.writes} writes at ${(load.writes / load.seconds).toFixed(0)}/s; warned at lag ${String(lagWarning!.lagEvents)}, applying ${String(lagWarning!.eventsPerSecond)} events/s`);
    expect(auth(during).destination.limiting).toBe(true);
    expect(String(auth(during).destination.message)).toMatch(/^lag growing: destination uses password auth/);
    expect(await m.metrics()).toMatch(/^etcdmirror_auth_limited\{side="destination"\} 1$/m);

    const end = await pair.srcClient.put('/conftool/end', { value: 'sentinel' });
    await waitForIndex(pair.dstClient, INDEX_KEY, end.etcdIndex, 120_000);
    await dstLog.waitFor((e) => e.key === '/conftool/end', 10_000);
    await m.waitForLog((l) => String(l.msg).startsWith('destination caught up'), 10_000);
    await expectTreesEqual(pair.srcClient, '/conftool', pair.dstClient, '/conftool');
    expect(srcLog.problems).toEqual([]);
    expect(dstLog.problems).toEqual([]);
    const order = checkOrder(changesOf(srcLog.events, '/conftool'), changesOf(dstLog.events, '/conftool'), { initial, appliedUpTo: end.etcdIndex, allowedReplays: 0 });
    expect(order.examples).toEqual([]);
    expect(order).toMatchObject({ outOfOrder: 0, unexplained: 0, lost: 0 });
    expect(order.inOrder).toBe(load.writes + 1);

    // Said once each: at start, and for the one lag episode.
    expect(m.logs.filter(startWarning)).toHaveLength(1);
    expect(m.logs.filter((l) => String(l.msg).startsWith('lag growing'))).toHaveLength(1);
    expect(await m.metrics()).toMatch(/^etcdmirror_auth_limited\{side="destination"\} 0$/m);
    // The password came from a file: not in the process list, the logs or any page.
    const shown = await everythingShown(m);
    expect(shown).not.toContain(MIRROR_PW);
    expect(shown).not.toContain(ROOT_PW);
    expect(cmdline(m.proc.pid!)).toContain('--dst-password-file');
  }, 240_000);

  it('a password file for a URL without a user, or next to a URL password, is a one-line configuration error', async () => {
    const file = passwordFile('x.pw', 'x');
    const noUser = await runMirror([...COMMON, '--dst-password-file', file, pair.src.clientUrl, pair.dst.clientUrl]);
    expect(noUser.code).toBe(2);
    expect(noUser.stderr.trim().split('\n')).toHaveLength(1);
    expect(noUser.stderr).toMatch(/--dst-password-file: DST names no user/);
    const both = await runMirror([...COMMON, '--dst-password-file', file, pair.src.clientUrl, pair.dst.clientUrl.replace('http://', 'http://mirror:other@')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--dst-password-file: DST carries a password too/);
    expect(both.stderr).not.toContain('other');
    const empty = await runMirror([...COMMON, '--dst-password-file', passwordFile('empty.pw', ''), pair.src.clientUrl, pair.dst.clientUrl.replace('http://', 'http://mirror@')]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/--dst-password-file: the file is empty, but DST names user "mirror"/);
    const missing = await runMirror([...COMMON, '--src-password-file', path.join(tmp, 'nope'), pair.src.clientUrl, pair.dst.clientUrl]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--src-password-file: cannot read .*nope: ENOENT/);
  });
});

describe('password auth on a busy source', () => {
  let src: EtcdProcess;
  let dst: EtcdProcess;
  let proxy: FaultProxy;
  let dstClient: EtcdClient;
  beforeAll(async () => {
    [src, dst] = await Promise.all([startEtcd({ name: 'auth-src' }), startEtcd({ name: 'auth-dst' })]);
    await enableAuth(src.clientUrl, {
      rootPassword: ROOT_PW,
      users: [{ user: 'mirror', password: MIRROR_PW, read: ['/conftool*'], write: [] }],
      // The busy part of the store: anonymous writers, who pay no password check.
      guest: { read: ['/spicerack*'], write: ['/spicerack*'] },
    });
    const root = new EtcdClient(parseCluster(src.clientUrl.replace('http://', `http://root:${ROOT_PW}@`), 'src'));
    for (const k of ['a', 'b', 'c']) await root.put(`/conftool/${k}`, { value: `quiet-${k}` });
    await root.close();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(src.clientUrl).port) });
    dstClient = new EtcdClient(parseCluster(dst.clientUrl, 'dst'));
  });
  afterAll(async () => {
    await dstClient?.close();
    await proxy?.close();
    await Promise.all([src?.stop(), dst?.stop()]);
  });

  /** Runs the store at `perSecond` for `seconds` while a mirror follows the quiet /conftool; samples its trail. */
  async function busyStore(m: MirrorProcess, perSecond: number, seconds: number) {
    let sampling = true;
    let maxTrail = 0;
    const sampler = (async () => {
      while (sampling) {
        const s = await m.state();
        if (s.lagEvents !== null) maxTrail = Math.max(maxTrail, Number(s.lagEvents));
        await sleep(100);
      }
    })();
    const from = Date.now();
    const load = await anonymousLoad(src.clientUrl, '/spicerack', { perSecond, maxWrites: perSecond * seconds });
    const to = Date.now();
    sampling = false;
    await sampler;
    expect(load.errors).toEqual([]);
    // The first second holds the catch-up of whatever the start left; the budget holds from there on.
    const counted = proxy.requests().filter((r) => r.authorized && r.at >= from + 1_000 && r.at <= to);
    return { load, maxTrail, authenticated: counted.length, countedSeconds: (to - from - 1_000) / 1000, storePerSecond: load.writes / load.seconds };
  }

  async function startFollower(extra: string[]): Promise<MirrorProcess> {
    const srcUrl = `http://mirror@127.0.0.1:${proxy.port}`;
    const m = await spawnMirror([...COMMON, ...extra, '--src-password-file', passwordFile('src.pw', MIRROR_PW), srcUrl, dst.clientUrl]);
    mirrors.push(m);
    await m.waitForState('tailing', 60_000);
    await m.waitForState((s) => auth(s).source.costMs !== null && (s.sourceBudget as { active: boolean }).active, 30_000);
    return m;
  }

  it('keeps its authenticated requests within the budget and the quiet prefix inside the window', async () => {
    const m = await startFollower(['--reload']);
    const s = await m.state();
    expect(auth(s).source).toMatchObject({ auth: 'password', expensive: true });
    expect(String(auth(s).source.message)).toMatch(/^source uses password auth: ~\d+ ms .*held to 5 requests\/s .*CN=mirror lifts it$/);
    await m.waitForLog((l) => String(l.msg).startsWith('source uses password auth'));

    const run = await busyStore(m, 600, 12);
    const perSecond = run.authenticated / run.countedSeconds;
    console.log(
      `auth: busy source at ${run.storePerSecond.toFixed(0)} writes/s for ${run.load.seconds.toFixed(1)} s: the mirror sent ${run.authenticated} authenticated requests in ` +
        `${run.countedSeconds.toFixed(1)} s (${perSecond.toFixed(1)}/s, budget 5/s); stored index trailed the store by at most ${run.maxTrail}`,
    );
    // Five a second, plus the cost probe's one authenticated GET a minute and a slot straddling each end.
    expect(run.authenticated).toBeLessThanOrEqual(Math.ceil(5 * run.countedSeconds) + 3);
    expect(run.maxTrail).toBeLessThan(1000);
    expect(transitionsTo(m, ['outOfWindow', 'recovering'])).toEqual([]);
    expect((await m.state()).sourceBudget).toMatchObject({ perSecond: 5, active: true, exceeded: false });
    // Still following: a change in the quiet prefix arrives.
    const root = new EtcdClient(parseCluster(src.clientUrl.replace('http://', `http://root:${ROOT_PW}@`), 'src'));
    const change = await root.put('/conftool/a', { value: 'changed' });
    await root.close();
    await waitForIndex(dstClient, INDEX_KEY, change.etcdIndex, 30_000);
    expect((await dstClient.get('/conftool/a')).body.node.value).toBe('changed');
    expect(await m.metrics()).toMatch(/^etcdmirror_source_budget_requests_total\{purpose="proof"\} [1-9]/m);
  }, 120_000);

  it('with a budget too small for the store rate, says so and keeps the window rather than the budget', async () => {
    const m = await startFollower(['--src-request-budget', '1']);
    const run = await busyStore(m, 600, 10);
    const warned = m.logs.find((l) => String(l.msg).startsWith('the source request budget (1/s) would let the quiet prefix fall out'));
    console.log(
      `auth: budget 1/s, store at ${run.storePerSecond.toFixed(0)} writes/s: ${run.authenticated} authenticated requests in ${run.countedSeconds.toFixed(1)} s, ` +
        `trail at most ${run.maxTrail}; warned: ${warned ? String(warned.msg) : 'no'}`,
    );
    // At one proof a second, more than WINDOW_SAFE_EVENTS (200) indexes would pass between two proofs: the window decides.
    if (run.storePerSecond >= 400) {
      expect(warned).toBeDefined();
      expect(m.logs.filter((l) => String(l.msg).startsWith('the source request budget'))).toHaveLength(1);
      expect(await m.metrics()).toMatch(/^etcdmirror_source_budget_exceeded_total [1-9]/m);
    } else {
      console.log(`auth: the load reached only ${run.storePerSecond.toFixed(0)} writes/s here: the over-budget case was not reached`);
    }
    expect(run.maxTrail).toBeLessThan(1000);
    expect(transitionsTo(m, ['outOfWindow', 'recovering'])).toEqual([]);
  }, 120_000);
});

describe('certificate identities (TLS, --client-cert-auth, CN = etcd user)', () => {
  let pki: Pki;
  let src: EtcdProcess;
  let dst: EtcdProcess;
  const certs: Record<string, { cert: string; key: string }> = {};
  const tlsOf = (who: string) => ({ ca: readFileSync(pki.ca), cert: readFileSync(certs[who]!.cert), key: readFileSync(certs[who]!.key) });
  beforeAll(async () => {
    pki = makePki();
    for (const who of ['mirror-src', 'mirror-dst', 'writer', 'reader']) certs[who] = pki.clientFor(who);
    const tls = { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: true, probeCertFile: pki.clientCert, probeKeyFile: pki.clientKey };
    [src, dst] = await Promise.all([startEtcd({ name: 'cert-src', tls }), startEtcd({ name: 'cert-dst', tls })]);
    const setupTls = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey };
    await enableAuth(src.clientUrl, {
      rootPassword: ROOT_PW,
      users: [
        { user: 'mirror-src', read: ['/conftool*'], write: [] },
        { user: 'writer', read: ['/conftool*'], write: ['/conftool*'] },
      ],
      tls: setupTls,
    });
    await enableAuth(dst.clientUrl, {
      rootPassword: ROOT_PW,
      users: [
        { user: 'mirror-dst', read: ['/conftool*', '/__replication*'], write: ['/conftool*', '/__replication*'] },
        { user: 'reader', read: ['/conftool*', '/__replication*'], write: [] },
      ],
      tls: setupTls,
    });
  });
  afterAll(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
    pki?.cleanup();
  });

  it('replicates fully and in order with no password anywhere', async () => {
    const writer = new EtcdClient(parseCluster(src.clientUrl, 'src', tlsOf('writer')));
    const reader = new EtcdClient(parseCluster(dst.clientUrl, 'dst', tlsOf('reader')));
    const anonymous = new EtcdClient(parseCluster(src.clientUrl, 'src', { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) }));
    const agents = [new Agent({ connect: tlsOf('writer') }), new Agent({ connect: tlsOf('reader') })];
    try {
      // Auth is on: a certificate whose CN is no user gets nothing.
      await expect(anonymous.get('/conftool')).rejects.toThrow(/errorCode 110/);
      for (let i = 0; i < 10; i++) await writer.put(`/conftool/seed/k${i}`, { value: `seed-${i}` });
      const flags = (side: 'src' | 'dst', who: string) => [`--${side}-ca`, pki.ca, `--${side}-cert`, certs[who]!.cert, `--${side}-key`, certs[who]!.key];
      const m = await spawnMirror(['--reload', ...COMMON, ...flags('src', 'mirror-src'), ...flags('dst', 'mirror-dst'), src.clientUrl, dst.clientUrl]);
      mirrors.push(m);
      await m.waitForState('tailing', 60_000);
      const seeded = await writer.put('/conftool/seed/done', { value: 'seeded' });
      await waitForIndex(reader, INDEX_KEY, seeded.etcdIndex, 30_000);

      const srcLog = await recordEvents(src.clientUrl, '/conftool', agents[0]);
      const dstLog = await recordEvents(dst.clientUrl, '/conftool', agents[1]);
      recorders.push(srcLog, dstLog);
      const initial = await dumpTree(reader, '/conftool');
      // The action set the reference meets in production: sets, compare-and-swap, deletes, directories, TTL keys.
      for (let i = 0; i < 40; i++) await writer.put(`/conftool/pools/p${i % 8}`, { value: `live-${i}` });
      await writer.put('/conftool/pools/p0', { value: 'swapped', prevValue: 'live-32' });
      await writer.put('/conftool/dir', { dir: true });
      await writer.put('/conftool/dir/leaf', { value: 'in a dir' });
      await writer.put('/conftool/lock', { value: 'held', ttl: 60 });
      await writer.delete('/conftool/pools/p7');
      await writer.delete('/conftool/seed', { recursive: true });
      const end = await writer.put('/conftool/end', { value: 'sentinel' });
      await waitForIndex(reader, INDEX_KEY, end.etcdIndex, 30_000);
      await dstLog.waitFor((e) => e.key === '/conftool/end', 10_000);
      await expectTreesEqual(writer, '/conftool', reader, '/conftool');
      expect([srcLog.problems, dstLog.problems]).toEqual([[], []]);
      const order = checkOrder(changesOf(srcLog.events, '/conftool'), changesOf(dstLog.events, '/conftool'), { initial, appliedUpTo: end.etcdIndex, allowedReplays: 0 });
      expect(order.examples).toEqual([]);
      expect(order).toMatchObject({ outOfOrder: 0, unexplained: 0, lost: 0 });

      const s = await m.waitForState((x) => auth(x).source.costMs !== null && auth(x).destination.costMs !== null);
      expect(auth(s).source).toMatchObject({ auth: 'certificate', message: null, limiting: false });
      expect(auth(s).destination).toMatchObject({ auth: 'certificate', message: null, limiting: false });
      console.log(`auth: certificate identities: extra cost per request ${String(auth(s).source.costMs)} ms (source), ${String(auth(s).destination.costMs)} ms (destination)`);
      expect(m.logs.filter((l) => /uses password auth/.test(String(l.msg)))).toEqual([]);

      const verify = await runMirror(['verify', ...COMMON, ...flags('src', 'mirror-src'), ...flags('dst', 'mirror-dst'), src.clientUrl, dst.clientUrl], 30_000);
      expect(verify.stderr).toBe('');
      expect(verify.code).toBe(0);

      const shown = await everythingShown(m);
      expect(shown).not.toContain(ROOT_PW);
      expect(cmdline(m.proc.pid!)).not.toMatch(/https:\/\/[^ ]*@/);
    } finally {
      // The recorders' streams run on the agents: an agent closes once its requests have ended.
      await Promise.all(recorders.splice(0).map((r) => r.stop()));
      await Promise.all([writer.close(), reader.close(), anonymous.close(), ...agents.map((a) => a.close())]);
    }
  }, 120_000);
});
