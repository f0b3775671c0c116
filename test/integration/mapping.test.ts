// Key mapping exactly as the reference tool: full keyspace, strip and no-strip, and the ignore regex.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex } from '../helpers/raw.js';

let pair: Pair;
const mirrors: MirrorProcess[] = [];
const mirror = async (args: string[]) => {
  const m = await spawnMirror([...args, pair.src.clientUrl, pair.dst.clientUrl]);
  mirrors.push(m);
  await m.waitForState('tailing');
  return m;
};

beforeEach(async () => {
  pair = await startPair();
});
afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.kill('SIGTERM')));
  await pair.stop();
});

describe('key mapping', () => {
  it('mirrors the whole keyspace / → / with the index at /__replication/__ROOT__', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/conftool/v1/pools/x', { value: 'pooled' });
    await mirror(['--reload', '--src-prefix', '/', '--dst-prefix', '/']);
    await ok(S, 'PUT', '/spicerack/locks/a', { value: 'held' });
    await ok(S, 'PUT', '/top', { value: '1' });
    await ok(S, 'DELETE', '/conftool', { recursive: true });
    await ok(S, 'PUT', '/conftool/again', { value: '2' });
    await ok(S, 'PUT', '/_hidden', { value: 'not mirrored' });
    const idx = await storeIndex(S);
    expect(await waitForIndex(pair.dstClient, '/__replication/__ROOT__', idx)).toBeGreaterThanOrEqual(idx);
    await expectTreesEqual(pair.srcClient, '/', pair.dstClient, '/');
    expect((await raw(pair.dst.clientUrl, 'GET', '/_hidden')).status).toBe(404);
  });

  it('without --strip maps SP/x to DP + SP/x', async () => {
    const S = pair.src.clientUrl;
    await mirror(['--reload', '--src-prefix', '/conftool', '--dst-prefix', '/replica']);
    await ok(S, 'PUT', '/conftool/a/b', { value: 'v' });
    await ok(S, 'PUT', '/conftoolx/not-mine', { value: 'v' });
    await waitForIndex(pair.dstClient, '/__replication/replica', await storeIndex(S));
    await expectTreesEqual(pair.srcClient, '/conftool', pair.dstClient, '/replica/conftool');
    expect((await raw(pair.dst.clientUrl, 'GET', '/replica/conftoolx/not-mine')).status).toBe(404);
    expect((await raw(pair.dst.clientUrl, 'GET', '/replica/conftoolx')).status).toBe(404);
  });

  it('with --strip maps SP/x to DP/x, and two mirrors share a destination without touching each other', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/one/k', { value: '1' });
    await ok(S, 'PUT', '/two/k', { value: '2' });
    await mirror(['--reload', '--src-prefix', '/one', '--dst-prefix', '/r1', '--strip']);
    await mirror(['--reload', '--src-prefix', '/two/', '--dst-prefix', '/r2/', '--strip']);
    await ok(S, 'PUT', '/one/x', { value: 'x1' });
    await ok(S, 'PUT', '/two/x', { value: 'x2' });
    const idx = await storeIndex(S);
    await waitForIndex(pair.dstClient, '/__replication/r1', idx);
    await waitForIndex(pair.dstClient, '/__replication/r2', idx);
    await expectTreesEqual(pair.srcClient, '/one', pair.dstClient, '/r1');
    await expectTreesEqual(pair.srcClient, '/two', pair.dstClient, '/r2');
  });

  it('skips keys matching --src-ignore-keys-regex (full match) and still advances the index', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/spicerack/locks/etcd/old', { value: 'ignored at reload too' });
    await mirror(['--reload', '--src-prefix', '/spicerack', '--dst-prefix', '/spicerack', '--strip', '--src-ignore-keys-regex', '/spicerack/locks/etcd(/.*)?']);
    await ok(S, 'PUT', '/spicerack/locks/etcd/lock1', { value: 'held' });
    await ok(S, 'PUT', '/spicerack/locks/etcdx', { value: 'not ignored: full match only' });
    await ok(S, 'PUT', '/spicerack/locks/cookbooks/c', { value: 'kept' });
    const last = await ok(S, 'PUT', '/spicerack/locks/etcd/lock2', { value: 'held' });
    await waitForIndex(pair.dstClient, '/__replication/spicerack', last.etcdIndex);
    expect((await raw(pair.dst.clientUrl, 'GET', '/spicerack/locks/etcd')).status).toBe(404);
    expect((await raw(pair.dst.clientUrl, 'GET', '/spicerack/locks/etcdx')).status).toBe(200);
    await expectTreesEqual(pair.srcClient, '/spicerack', pair.dstClient, '/spicerack', {
      ignore: (rel) => rel === '/locks/etcd' || rel.startsWith('/locks/etcd/'),
    });
  });
});
