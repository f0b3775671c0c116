// `verify` and `index` against real clusters: equal trees, diverged trees, bad input.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMirror, spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex, writeMany } from '../helpers/raw.js';

let pair: Pair;
beforeAll(async () => {
  pair = await startPair();
  const S = pair.src.clientUrl;
  await ok(S, 'PUT', '/app/a', { value: '1' });
  await ok(S, 'PUT', '/app/dir/b', { value: '2' });
  await ok(S, 'PUT', '/app/ttl', { value: 't', ttl: 600 });
  await ok(S, 'PUT', '/app/_hidden', { value: 'h' });
  const m = await spawnMirror(['--reload', '--src-prefix', '/app', '--dst-prefix', '/copy', '--strip', S, pair.dst.clientUrl]);
  await m.waitForState('tailing');
  await waitForIndex(pair.dstClient, '/__replication/copy', await storeIndex(S));
  await m.kill('SIGTERM');
});
afterAll(async () => {
  await pair?.stop();
});

const verify = (...extra: string[]) => runMirror(['verify', '--src-prefix', '/app', '--dst-prefix', '/copy', '--strip', ...extra, pair.src.clientUrl, pair.dst.clientUrl]);

describe('verify', () => {
  it('exits 0 on equal trees', async () => {
    const r = await verify();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^equal: \d+ keys compared/);
  });

  it('lists missing, extra and differing keys and exits 1; --json gives the same', async () => {
    const D = pair.dst.clientUrl;
    await ok(D, 'DELETE', '/copy/a');
    await ok(D, 'PUT', '/copy/extra', { value: 'x' });
    await ok(D, 'PUT', '/copy/dir/b', { value: 'changed' });
    const r = await verify();
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('missing   /copy/a');
    expect(r.stdout).toContain('extra     /copy/extra');
    expect(r.stdout).toMatch(/differs   \/copy\/dir\/b: source value "2", destination value "changed"/);
    const j = await verify('--json');
    expect(j.code).toBe(1);
    const report = JSON.parse(j.stdout) as { equal: boolean; missing: string[]; extra: string[]; differing: { key: string }[] };
    expect(report).toMatchObject({ equal: false, missing: ['/copy/a'], extra: ['/copy/extra'], differing: [{ key: '/copy/dir/b' }] });
    // heal for the index tests below
    await ok(D, 'PUT', '/copy/a', { value: '1' });
    await ok(D, 'DELETE', '/copy/extra');
    await ok(D, 'PUT', '/copy/dir/b', { value: '2' });
    expect((await verify()).code).toBe(0);
  });

  it('refuses bad input with one line and exit 2', async () => {
    const r = await runMirror(['verify', '--src-prefix', 'relative', pair.src.clientUrl, pair.dst.clientUrl]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect((await runMirror(['verify', pair.src.clientUrl])).code).toBe(2);
  });
});

describe('index', () => {
  const index = (...args: string[]) => runMirror(['index', ...args]);

  it('get prints the stored index with the source window', async () => {
    const r = await index('get', pair.dst.clientUrl, '--dst-prefix', '/copy', '--src', pair.src.clientUrl);
    expect(r.code).toBe(0);
    const current = await storeIndex(pair.src.clientUrl);
    expect(r.stdout).toContain('/__replication/copy: ');
    expect(r.stdout).toContain(`source: current index ${current}, oldest index in its history ${Math.max(1, current - 999)}`);
    expect(r.stdout).toMatch(/status: inside the window/);
  });

  it('set refuses values above the source or older than its window unless --force, and prints before/after', async () => {
    const current = await storeIndex(pair.src.clientUrl);
    const above = await index('set', pair.dst.clientUrl, String(current + 10), '--dst-prefix', '/copy', '--src', pair.src.clientUrl);
    expect(above.code).toBe(2);
    expect(above.stderr).toMatch(/above the source's current index/);
    await writeMany(1_100, (i) => ok(pair.src.clientUrl, 'PUT', '/elsewhere/k', { value: String(i) }));
    const old = await index('set', pair.dst.clientUrl, '5', '--dst-prefix', '/copy', '--src', pair.src.clientUrl);
    expect(old.code).toBe(2);
    expect(old.stderr).toMatch(/older than the source's history window/);
    const now = await storeIndex(pair.src.clientUrl);
    const set = await index('set', pair.dst.clientUrl, String(now), '--dst-prefix', '/copy', '--src', pair.src.clientUrl);
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(new RegExp(`/__replication/copy: \\d+ -> ${now}`));
    expect(((await raw(pair.dst.clientUrl, 'GET', '/__replication/copy')).body.node as { value: string }).value).toBe(String(now));
    const forced = await index('set', pair.dst.clientUrl, '5', '--dst-prefix', '/copy', '--force');
    expect(forced.code).toBe(0);
  });

  it('refuses bad input', async () => {
    expect((await index('bogus', pair.dst.clientUrl)).code).toBe(2);
    expect((await index('set', pair.dst.clientUrl, 'abc', '--force')).code).toBe(2);
    expect((await index('set', pair.dst.clientUrl, '10')).stderr).toMatch(/pass --src SRC/);
  });
});

describe('hidden keys', () => {
  it('are not mirrored, and a reconcile never deletes hidden keys on the destination', async () => {
    expect((await raw(pair.dst.clientUrl, 'GET', '/copy/_hidden')).status).toBe(404);
    await ok(pair.dst.clientUrl, 'PUT', '/copy/_local', { value: 'site-local' });
    await ok(pair.src.clientUrl, 'PUT', '/app/_hidden2', { value: 'h' });
    const m = await spawnMirror(['--reload', '--src-prefix', '/app', '--dst-prefix', '/copy', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
    await m.waitForState('tailing');
    await ok(pair.src.clientUrl, 'PUT', '/app/visible', { value: 'v' });
    await waitForIndex(pair.dstClient, '/__replication/copy', await storeIndex(pair.src.clientUrl));
    await m.kill('SIGTERM');
    expect((await raw(pair.dst.clientUrl, 'GET', '/copy/_local')).status).toBe(200);
    expect((await raw(pair.dst.clientUrl, 'GET', '/copy/_hidden2')).status).toBe(404);
    expect((await raw(pair.dst.clientUrl, 'GET', '/copy/visible')).status).toBe(200);
  });
});

describe('ancestor of the prefix', () => {
  it('a recursive delete above the source prefix empties the mirrored subtree (and only it)', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/anc/sub/k', { value: '1' });
    await ok(pair.dst.clientUrl, 'PUT', '/other/keep', { value: 'not ours' });
    const m = await spawnMirror(['--reload', '--src-prefix', '/anc/sub', '--dst-prefix', '/mirror', '--strip', S, pair.dst.clientUrl]);
    await m.waitForState('tailing');
    await waitForIndex(pair.dstClient, '/__replication/mirror', await storeIndex(S));
    expect((await raw(pair.dst.clientUrl, 'GET', '/mirror/k')).status).toBe(200);
    await ok(S, 'DELETE', '/anc', { recursive: true });
    await waitForIndex(pair.dstClient, '/__replication/mirror', await storeIndex(S));
    await m.kill('SIGTERM');
    expect((await raw(pair.dst.clientUrl, 'GET', '/mirror')).status).toBe(404);
    expect((await raw(pair.dst.clientUrl, 'GET', '/other/keep')).status).toBe(200);
    expect((await raw(pair.dst.clientUrl, 'GET', '/__replication/mirror')).status).toBe(200);
  });
});
