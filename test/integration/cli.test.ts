// Bad input: one clear line on stderr, non-zero exit, nothing written, no password anywhere.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { enableAuth, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { runMirror, spawnMirror, startPair, type Pair } from '../helpers/mirror.js';
import { ok, raw } from '../helpers/raw.js';

const PASSWORD = 'Sup3r-S3cret-PW';
let pair: Pair;
let authed: EtcdProcess;

beforeAll(async () => {
  pair = await startPair();
  authed = await startEtcd({ name: 'auth' });
  await enableAuth(authed.clientUrl, {
    rootPassword: 'rootpw-not-used-by-mirror',
    users: [{ user: 'mirror', password: PASSWORD, read: ['/app*'], write: ['/app*', '/__replication*'] }],
  });
});
afterAll(async () => {
  await pair?.stop();
  await authed?.stop();
});

const oneLine = (stderr: string) => {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  return lines[0]!;
};

describe('command line', () => {
  it('--version prints the package version and --help documents every flag', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect((await runMirror(['--version'])).stdout.trim()).toBe(pkg.version);
    const help = await runMirror(['--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--debug', '--reload', '--src-prefix', '--dst-prefix', '--strip', '--src-ignore-keys-regex', '--port', '--listen-address', '--allow-mass-delete', '--mass-delete-ratio', '--write-concurrency', '--checkpoint-ms', '--ordering']) {
      expect(help.stdout).toContain(flag);
    }
  });

  const bad: [string, string[], RegExp][] = [
    ['bad URL', ['not a url', 'http://127.0.0.1:1'], /SRC: not a valid URL/],
    ['unsupported scheme', ['ftp://127.0.0.1:1', 'http://127.0.0.1:1'], /unsupported scheme "ftp"/],
    ['missing port', ['http://127.0.0.1', 'http://127.0.0.1:1'], /SRC: missing port/],
    ['relative prefix', ['--src-prefix', 'conftool', 'http://127.0.0.1:1', 'http://127.0.0.1:2'], /--src-prefix: prefix must be absolute/],
    ['empty prefix', ['--dst-prefix', '', 'http://127.0.0.1:1', 'http://127.0.0.1:2'], /--dst-prefix: empty prefix/],
    ['invalid regex', ['--src-ignore-keys-regex', '(unclosed', 'http://127.0.0.1:1', 'http://127.0.0.1:2'], /invalid regular expression/],
    ['unknown flag', ['--bogus', 'http://127.0.0.1:1', 'http://127.0.0.1:2'], /Unknown option '--bogus'/],
    ['missing DST', ['http://127.0.0.1:1'], /expected exactly two arguments/],
    ['feeding itself', ['--src-prefix', '/a', '--dst-prefix', '/a', '--strip', 'http://127.0.0.1:1', 'http://127.0.0.1:1'], /same cluster/],
  ];
  for (const [name, args, message] of bad) {
    it(`refuses ${name} with one line and exit 2`, async () => {
      const r = await runMirror(args);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toMatch(message);
      expect(r.stdout).toBe('');
    });
  }

  it('a password in a malformed URL is not echoed', async () => {
    const r = await runMirror([`http://user:${PASSWORD}@[::1`, 'http://127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toContain(PASSWORD);
  });

  it('a wrong password fails with one line naming the cluster, and never prints the password', async () => {
    const good = `http://mirror:${encodeURIComponent(PASSWORD)}@${authed.clientUrl.replace('http://', '')}`;
    const wrong = `http://mirror:wrong-${encodeURIComponent(PASSWORD)}@${authed.clientUrl.replace('http://', '')}`;
    await ok(pair.dst.clientUrl, 'PUT', '/__replication/app', { value: '1' });
    const m = await spawnMirror(['-d', '--src-prefix', '/app', '--dst-prefix', '/app', '--strip', wrong, pair.dst.clientUrl]);
    expect(await m.exited()).toBe(1);
    expect(oneLine(m.stderr())).toMatch(new RegExp(`${authed.clientUrl}: request refused \\(errorCode 110\\)`));
    const everything = m.stderr() + JSON.stringify(m.logs);
    expect(everything).not.toContain(PASSWORD);
    expect(everything).not.toContain(encodeURIComponent(PASSWORD));

    // The right password works (and is not printed either, even at debug level).
    const r = await spawnMirror(['-d', '--reload', '--src-prefix', '/app', '--dst-prefix', '/app', '--strip', good, pair.dst.clientUrl]);
    await r.waitForState('tailing');
    const state = JSON.stringify(await r.state()) + (await r.metrics());
    await r.kill('SIGTERM');
    expect(state + JSON.stringify(r.logs) + r.stderr()).not.toContain(PASSWORD);
    expect((await raw(pair.dst.clientUrl, 'GET', '/__replication/app')).status).toBe(200);
  });

  it('permission denied on the destination prefix fails with one line and never prints the password', async () => {
    await ok(pair.src.clientUrl, 'PUT', '/perm/a', { value: '1' });
    const dst = `http://mirror:${encodeURIComponent(PASSWORD)}@${authed.clientUrl.replace('http://', '')}`;
    const m = await spawnMirror(['--reload', '--src-prefix', '/perm', '--dst-prefix', '/forbidden', '--strip', pair.src.clientUrl, dst]);
    expect(await m.exited()).toBe(1);
    expect(oneLine(m.stderr())).toMatch(new RegExp(`${authed.clientUrl}: request refused \\(errorCode 110\\)`));
    expect(m.stderr() + JSON.stringify(m.logs)).not.toContain(PASSWORD);
  });

  it('SIGTERM stops within 5 s with exit 0 and the index stored', async () => {
    await ok(pair.src.clientUrl, 'PUT', '/term/a', { value: '1' });
    const m = await spawnMirror(['--reload', '--src-prefix', '/term', '--dst-prefix', '/term', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
    await m.waitForState('tailing');
    const last = await ok(pair.src.clientUrl, 'PUT', '/term/b', { value: '2' });
    await m.waitForState((s) => Number(s.appliedIndex) >= last.etcdIndex);
    const t0 = Date.now();
    expect(await m.kill('SIGTERM')).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5_000);
    const stored = await raw(pair.dst.clientUrl, 'GET', '/__replication/term');
    expect(Number((stored.body.node as { value: string }).value)).toBeGreaterThanOrEqual(last.etcdIndex);
  });
});
