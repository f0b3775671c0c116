// Smoke test of the test harness itself: etcd processes, tree comparison, fault proxy.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enableAuth, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { EtcdClient } from '../../src/etcd/v2/client.js';
import { parseEndpoint } from '../../src/etcd/endpoint.js';
import { TransportError, UnauthorizedError } from '../../src/etcd/errors.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { dumpTree, expectTreesEqual } from '../helpers/tree.js';

const clientFor = (url: string): EtcdClient => new EtcdClient(parseEndpoint(url, 'test'), { connections: 4 });

async function fill(c: EtcdClient, prefix: string): Promise<void> {
  await c.put(`${prefix}/plain`, { value: '1' });
  await c.put(`${prefix}/a b%c`, { value: 'odd name' });
  await c.put(`${prefix}/emptydir`, { dir: true });
  await c.put(`${prefix}/sub/deeper/x`, { value: 'deep' });
  await c.put(`${prefix}/ttl`, { value: 't', ttl: 600 });
}

describe('test harness', () => {
  let a: EtcdProcess;
  let b: EtcdProcess;
  let ca: EtcdClient;
  let cb: EtcdClient;
  const proxies: FaultProxy[] = [];
  const clients: EtcdClient[] = [];

  beforeAll(async () => {
    [a, b] = await Promise.all([startEtcd({ name: 'a' }), startEtcd({ name: 'b' })]);
    ca = clientFor(a.clientUrl);
    cb = clientFor(b.clientUrl);
    clients.push(ca, cb);
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('dumps trees relative to the prefix and compares them', async () => {
    await fill(ca, '/t');
    await fill(cb, '/t');
    await fill(cb, '/mapped/t');

    const tree = await dumpTree(ca, '/t');
    expect([...tree.keys()]).toEqual(['', '/a b%c', '/emptydir', '/plain', '/sub', '/sub/deeper', '/sub/deeper/x', '/ttl']);
    expect(tree.get('/a b%c')).toEqual({ dir: false, value: 'odd name', ttl: false });
    expect(tree.get('/emptydir')).toEqual({ dir: true, ttl: false });
    expect(tree.get('/ttl')).toMatchObject({ dir: false, value: 't', ttl: true, expiration: expect.any(String) });
    expect((await dumpTree(ca, '/nonexistent')).size).toBe(0);

    await expectTreesEqual(ca, '/t', cb, '/t');
    await expectTreesEqual(ca, '/t', cb, '/mapped/t');

    await cb.put('/t/plain', { value: '2' });
    await cb.delete('/t/emptydir', { dir: true });
    await cb.put('/t/more', { value: 'x' });
    const err = await expectTreesEqual(ca, '/t', cb, '/t', { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toContain('3 differences');
    expect(msg).toContain(`missing: "/emptydir" (dir)`);
    expect(msg).toContain(`extra: "/more" (value "x")`);
    expect(msg).toContain(`differs: "/plain": value "1" vs "2"`);
    await expectTreesEqual(ca, '/t', cb, '/t', { timeoutMs: 300, ignore: (k) => ['/plain', '/emptydir', '/more'].includes(k) });
  });

  it('delays, blackholes and cuts through the fault proxy', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(a.clientUrl).port) });
    proxies.push(proxy);
    const via = clientFor(proxy.url);
    clients.push(via);

    proxy.setDelay(30);
    const t0 = performance.now();
    expect((await via.get('/t/plain')).body.node.value).toBe('1');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(60);
    expect(proxy.connections()).toBe(1);
    // Many chunks in flight: must arrive intact and in order.
    const big = Array.from({ length: 40_000 }, (_, i) => `${i},`).join('');
    await via.put('/t2/big', { value: big });
    expect((await via.get('/t2/big')).body.node.value).toBe(big);
    proxy.setDelay(0);

    proxy.blackhole(true);
    const t1 = performance.now();
    await expect(via.get('/t/plain', { timeoutMs: 500 })).rejects.toBeInstanceOf(TransportError);
    expect(performance.now() - t1).toBeGreaterThanOrEqual(450);
    proxy.blackhole(false);
    expect((await via.get('/t/plain')).body.node.value).toBe('1'); // undici dropped the timed-out connection

    const ac = new AbortController();
    const watch = await via.watch('/t', { recursive: true, signal: ac.signal });
    proxy.cut();
    await expect(watch.event).rejects.toBeInstanceOf(TransportError);
    await expect.poll(() => proxy.connections()).toBe(0);
    expect((await via.get('/t/plain')).body.node.value).toBe('1'); // new connections are accepted
    ac.abort();
  });

  it('keeps data across restart() and kill()', async () => {
    await cb.put('/persist/k', { value: 'v' });
    const pid = b.pid;
    await b.restart();
    expect(b.pid).not.toBe(pid);
    expect((await cb.get('/persist/k')).body.node.value).toBe('v');

    await b.kill('SIGKILL');
    expect(() => process.kill(pid, 0)).toThrow();
    await b.restart();
    expect((await cb.get('/persist/k')).body.node.value).toBe('v');
  });

  it('enables auth and revokes guest access', async () => {
    const e = await startEtcd({ name: 'auth' });
    try {
      await enableAuth(e.clientUrl, {
        rootPassword: 'rootpw',
        users: [{ user: 'alice', password: 'alice pw%', read: ['/app', '/app*'], write: ['/app', '/app*'] }],
      });
      const anon = clientFor(e.clientUrl);
      const alice = clientFor(`http://alice:${encodeURIComponent('alice pw%')}@${new URL(e.clientUrl).host}`);
      clients.push(anon, alice);
      await alice.put('/app/x', { value: '1' });
      expect((await alice.get('/app', { recursive: true })).body.node.nodes).toHaveLength(1);
      await expect(alice.put('/other/x', { value: '1' })).rejects.toBeInstanceOf(UnauthorizedError);
      await expect(anon.get('/app/x')).rejects.toBeInstanceOf(UnauthorizedError);
      await e.restart(); // readiness must accept the 401 an auth-enabled etcd gives anonymous requests
      expect((await alice.get('/app/x')).body.node.value).toBe('1');
    } finally {
      await e.stop();
    }
  });

  it('stop() ends the processes and removes their data', async () => {
    const pids = [a.pid, b.pid];
    await Promise.all([a.stop(), b.stop()]);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(a.dataDir)).toBe(false);
    expect(existsSync(b.dataDir)).toBe(false);
    await expect(ca.get('/t', { timeoutMs: 1000 })).rejects.toBeInstanceOf(TransportError);
    await expect(a.restart()).rejects.toThrow(/after stop/);
  });
});
