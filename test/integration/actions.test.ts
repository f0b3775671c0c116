// Every v2 action, replicated by the real binary between two real etcd processes, ends in equal trees.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex } from '../helpers/raw.js';
import { waitFor } from '../helpers/wait.js';

let pair: Pair;
let mirror: MirrorProcess;

beforeAll(async () => {
  pair = await startPair();
  await ok(pair.src.clientUrl, 'PUT', '/demo/seed', { value: 'before the mirror started' });
  mirror = await spawnMirror(['--reload', '--src-prefix', '/demo', '--dst-prefix', '/replica', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
  await mirror.waitForState('tailing');
});

afterAll(async () => {
  await mirror?.kill('SIGTERM');
  await pair?.stop();
});

describe('every v2 operation', () => {
  it('replicates values, preconditions, dirs, POST, TTLs and odd keys into an equal tree', async () => {
    const S = pair.src.clientUrl;
    // set, overwrite, create, update, compareAndSwap (value and index)
    await ok(S, 'PUT', '/demo/a', { value: '1' });
    await ok(S, 'PUT', '/demo/a', { value: '2' });
    await ok(S, 'PUT', '/demo/b', { value: 'b1', prevExist: false });
    await ok(S, 'PUT', '/demo/b', { value: 'b3', prevExist: true });
    await ok(S, 'PUT', '/demo/a', { value: '3', prevValue: '2' });
    const a = await ok(S, 'PUT', '/demo/a', { value: '4' });
    await ok(S, 'PUT', '/demo/a', { value: '5', prevIndex: a.etcdIndex });
    // compareAndDelete by value and by index
    await ok(S, 'PUT', '/demo/c', { value: 'c1' });
    const d = await ok(S, 'PUT', '/demo/d', { value: 'd1' });
    await ok(S, 'DELETE', '/demo/c', { prevValue: 'c1' });
    await ok(S, 'DELETE', '/demo/d', { prevIndex: d.etcdIndex });
    // directories: mkdir, implicit parents, recursive delete, empty-dir delete, dir over a file
    await ok(S, 'PUT', '/demo/dir1', { dir: true });
    await ok(S, 'PUT', '/demo/dir1/k1', { value: 'v' });
    await ok(S, 'PUT', '/demo/dir2/sub/k2', { value: 'v2' });
    await ok(S, 'DELETE', '/demo/dir1', { recursive: true });
    await ok(S, 'PUT', '/demo/dir3', { dir: true });
    await ok(S, 'DELETE', '/demo/dir3', { dir: true });
    await ok(S, 'PUT', '/demo/emptydir', { dir: true });
    await ok(S, 'PUT', '/demo/f', { value: 'file' });
    await ok(S, 'PUT', '/demo/f', { dir: true });
    // POST: in-order keys keep their generated names
    await ok(S, 'POST', '/demo/queue', { value: 'job1' });
    await ok(S, 'POST', '/demo/queue', { value: 'job2' });
    // dir TTL: set, change, remove
    await ok(S, 'PUT', '/demo/tdir', { dir: true, ttl: 300 });
    await ok(S, 'PUT', '/demo/tdir/child', { value: 'c' });
    await ok(S, 'PUT', '/demo/tdir', { dir: true, prevExist: true, ttl: 600 });
    await ok(S, 'PUT', '/demo/tdir2', { dir: true, ttl: 300 });
    await ok(S, 'PUT', '/demo/tdir2', { dir: true, prevExist: true, ttl: '' });
    // key TTL: set, remove; expiry of a key and of a dir with children
    await ok(S, 'PUT', '/demo/ttlkey', { value: 'x', ttl: 300 });
    await ok(S, 'PUT', '/demo/ttlgone', { value: 'x', ttl: 300 });
    await ok(S, 'PUT', '/demo/ttlgone', { value: 'x', ttl: '' });
    await ok(S, 'PUT', '/demo/expires', { value: 'soon', ttl: 1 });
    await ok(S, 'PUT', '/demo/dexp', { dir: true, ttl: 1 });
    await ok(S, 'PUT', '/demo/dexp/child', { value: 'c' });
    // keys that need encoding, an empty value and a 1 MiB value
    for (const k of ['sp ace', 'pct%41', 'q?x', 'h#x', 'plus+x', 'ünï©ode ✓', 'amp&eq=']) await ok(S, 'PUT', `/demo/odd/${k}`, { value: k });
    await ok(S, 'PUT', '/demo/empty', { value: '' });
    await ok(S, 'PUT', '/demo/big', { value: 'x'.repeat(1024 * 1024) });
    // deletes of things that exist only on the source side of history
    await ok(S, 'DELETE', '/demo/seed');

    // Both 1 s TTLs expire on the source (expiry runs on a 500 ms tick).
    await waitFor(async () => (await raw(S, 'GET', '/demo/expires')).status === 404 && (await raw(S, 'GET', '/demo/dexp')).status === 404, 'the 1 s TTLs to expire', 10_000);
    await waitForIndex(pair.dstClient, '/__replication/replica', await storeIndex(S));
    await expectTreesEqual(pair.srcClient, '/demo', pair.dstClient, '/replica');

    const big = await raw(pair.dst.clientUrl, 'GET', '/replica/big');
    expect((big.body.node as { value: string }).value.length).toBe(1024 * 1024);
    const pct = await raw(pair.dst.clientUrl, 'GET', '/replica/odd/pct%41');
    expect((pct.body.node as { value: string }).value).toBe('pct%41');
    const queue = await raw(pair.dst.clientUrl, 'GET', '/replica/queue', { sorted: true });
    const srcQueue = await raw(S, 'GET', '/demo/queue', { sorted: true });
    const names = (r: typeof queue) => ((r.body.node as { nodes: { key: string }[] }).nodes ?? []).map((n) => n.key.split('/').pop());
    expect(names(queue)).toEqual(names(srcQueue));
    const metrics = await mirror.metrics();
    expect(metrics).toMatch(/etcdmirror_replicated_events_total [1-9]\d*/);
    // The mirror's own share of each event's delay is measured, event by event.
    expect(metrics).toMatch(/etcdmirror_event_wait_seconds_count [1-9]\d*/);
    // … and its own part of it (not the wait for the write before it), for the same events.
    expect(metrics.match(/etcdmirror_event_overhead_seconds_count (\d+)/)?.[1]).toBe(metrics.match(/etcdmirror_event_wait_seconds_count (\d+)/)?.[1]);
  });
});
