// The v2 → v3 bridge (--src-api v2 --dst-api v3): v2 writers go on while v3 readers get the same keys. Real
// etcd processes; the source is driven with raw v2 requests, the destination read through v3.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { V3Client } from '../../src/etcd/v3/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { runMirror, spawnMirror, type MirrorProcess } from '../helpers/mirror.js';
import { followPresence } from '../helpers/oracle.js';
import { ok, raw, sleep, storeIndex } from '../helpers/raw.js';
import { b, record, rewoundValues, v3Tree, values, waitFor } from '../helpers/v3-pair.js';

const BRIDGE = ['--src-api', 'v2', '--dst-api', 'v3'];
let src: EtcdProcess;
let dst: EtcdProcess;
let d: V3Client;

beforeAll(async () => {
  [src, dst] = await Promise.all([startEtcd({ name: 'v2src' }), startEtcd({ name: 'v3dst' })]);
  d = new V3Client(parseCluster(dst.clientUrl, 'dst'));
});
afterAll(async () => {
  await d?.close();
  await Promise.all([src?.stop(), dst?.stop()]);
});

/** The v2 leaves under /demo, as path → value (what the v3 side must hold under /replica). */
async function v2Leaves(): Promise<Record<string, string>> {
  const res = await ok(src.clientUrl, 'GET', '/demo', { recursive: true });
  const out: Record<string, string> = {};
  const walk = (n: { key?: string; value?: string; dir?: boolean; nodes?: unknown[] }) => {
    if (n.dir) for (const c of (n.nodes ?? []) as (typeof n)[]) walk(c);
    else out[n.key!.replace(/^\/demo/, '/replica')] = n.value ?? '';
  };
  walk((res.body as { node: Parameters<typeof walk>[0] }).node);
  return Object.fromEntries(Object.entries(out).sort());
}

async function caughtUp(): Promise<void> {
  const index = await storeIndex(src.clientUrl);
  await waitFor(async () => Number((await d.range(b('/__replication/replica'))).kvs[0]?.value.toString() ?? -1) >= index, `checkpoint ≥ ${index}`);
}

async function bridge(extra: string[] = []): Promise<MirrorProcess> {
  return spawnMirror([...BRIDGE, '--src-prefix', '/demo', '--dst-prefix', '/replica', '--strip', ...extra, src.clientUrl, dst.clientUrl]);
}

/**
 * The test's own v2 TTL key, refreshed every 500 ms from before the bridge starts, so that its life never depends
 * on how fast the machine is. Should a refresh come too late anyway, the key is set again with a new value.
 */
function keepRefreshed(S: string, key: string, ttl: number): { ready: Promise<void>; value(): string; stop(): Promise<void> } {
  let sets = 0;
  let value = '';
  let stopped = false;
  const set = async () => {
    value = `r${++sets}`;
    await ok(S, 'PUT', key, { value, ttl });
  };
  const ready = set();
  const loop = (async () => {
    await ready;
    while (!stopped) {
      await sleep(500);
      if (!stopped && (await raw(S, 'PUT', key, { ttl, refresh: true, prevExist: true })).status === 404) await set();
    }
  })();
  return { ready, value: () => value, stop: async () => { stopped = true; await loop; } };
}

/** The destination copy of /demo/refreshed once it holds `value`: when it was seen, and its lease's granted TTL. */
async function copyOf(value: string): Promise<{ value: string; seenAt: number; grantedTtl: number }> {
  const kv = await waitFor(async () => {
    const c = (await v3Tree(d, '/replica')).get('/replica/refreshed');
    return c?.value === value ? c : undefined;
  }, `the copy of /demo/refreshed=${value}`);
  const seenAt = Date.now();
  expect(kv.lease).not.toBe('0');
  return { value, seenAt, grantedTtl: (await d.leaseTimeToLive(kv.lease)).grantedTtl };
}

describe('v2 → v3 bridge', () => {
  it('replays the v2 action set into equal v3 keys: values, preconditions, dirs, recursive deletes, POST, TTLs', async () => {
    const S = src.clientUrl;
    await ok(S, 'PUT', '/demo/seed', { value: 'before the mirror started' });
    await ok(S, 'PUT', '/demox/outside', { value: 'not mirrored' });
    const m = await bridge(['--reload']);
    await m.waitForState('tailing');

    await ok(S, 'PUT', '/demo/a', { value: '1' });
    await ok(S, 'PUT', '/demo/a', { value: '2', prevValue: '1' });
    await ok(S, 'PUT', '/demo/b', { value: 'b1', prevExist: false });
    await ok(S, 'PUT', '/demo/c', { value: 'c' });
    await ok(S, 'DELETE', '/demo/c', { prevValue: 'c' });
    await ok(S, 'PUT', '/demo/dir1', { dir: true });
    await ok(S, 'PUT', '/demo/dir1/k1', { value: 'v' });
    await ok(S, 'PUT', '/demo/dir1/sub/k2', { value: 'v2' });
    await ok(S, 'PUT', '/demo/dir1x', { value: 'sibling of dir1, not below it' });
    await ok(S, 'DELETE', '/demo/dir1', { recursive: true });
    await ok(S, 'PUT', '/demo/emptydir', { dir: true });
    const job = await ok(S, 'POST', '/demo/queue', { value: 'job1' });
    await ok(S, 'POST', '/demo/queue', { value: 'job2' });
    await ok(S, 'PUT', '/demo/with space/ünï/100%', { value: 'odd ✓' });
    await ok(S, 'PUT', '/demo/_hidden', { value: 'hidden in v2' });
    await ok(S, 'PUT', '/demo/ttl/short', { value: 'x', ttl: 2 });
    await ok(S, 'PUT', '/demo/ttl/long', { value: 'y', ttl: 300 });
    await caughtUp();

    const tree = await v3Tree(d, '/replica');
    expect(values(tree)).toEqual(await v2Leaves());
    // POST keeps the generated name; an empty v2 directory has no v3 form; hidden keys stay hidden.
    const jobKey = (job.body as { node: { key: string } }).node.key.replace(/^\/demo/, '/replica');
    expect(tree.get(jobKey)?.value).toBe('job1');
    expect(tree.has('/replica/emptydir')).toBe(false);
    expect(tree.has('/replica/_hidden')).toBe(false);
    expect(tree.has('/replica/dir1x')).toBe(true);
    expect([...tree.keys()].some((k) => k.startsWith('/replica/dir1/'))).toBe(false);
    expect((await d.range(b('/replicax/outside'))).kvs).toHaveLength(0);
    // TTL keys are lease-backed on v3; the short one expires on the source and goes on the destination.
    expect(tree.get('/replica/ttl/long')!.lease).not.toBe('0');
    await waitFor(async () => !(await v3Tree(d, '/replica')).has('/replica/ttl/short'), 'expired key gone', 15_000);
    expect((await v3Tree(d, '/replica')).has('/replica/ttl/long')).toBe(true);

    const verify = await runMirror(['verify', ...BRIDGE, '--src-prefix', '/demo', '--dst-prefix', '/replica', '--strip', src.clientUrl, dst.clientUrl]);
    expect(verify.stdout).toMatch(/^equal: /);
    expect(verify.code).toBe(0);
    await m.kill('SIGTERM');
  });

  it('resumes from the checkpoint after kill -9 while v2 writers go on, and keeps a refreshed TTL key alive', async () => {
    const S = src.clientUrl;
    const refreshed = keepRefreshed(S, '/demo/refreshed', 4);
    await refreshed.ready;
    let m = await bridge();
    await m.waitForState('tailing');
    const crash = async () => {
      await m.kill('SIGKILL');
      m = await bridge();
      await m.waitForState('tailing');
    };
    let copy = await copyOf(refreshed.value());
    const log = record(d, '/replica/load', (await d.status()).revision + 1);
    let writing = true;
    let n = 0;
    const writer = (async () => {
      while (writing && n < 5_000) await ok(S, 'PUT', `/demo/load/${n % 20}`, { value: String(n++) });
    })();
    for (let round = 0; round < 2; round++) {
      await waitFor(async () => n > (round + 1) * 200, 'load');
      await crash();
    }
    writing = false;
    await writer;
    // A refresh sends no watch event: the copy outlives the TTL its lease was granted with only if the bridges,
    // the killed ones and the last one, read the source key's TTL and keep the lease alive.
    for (let attempt = 0; ; attempt++) {
      await sleep(copy.seenAt + copy.grantedTtl * 1000 + 1_000 - Date.now());
      const seen = (await v3Tree(d, '/replica')).get('/replica/refreshed')?.value;
      // Read after the copy: the source key still holding the same value was alive the whole time.
      if (((await raw(S, 'GET', '/demo/refreshed')).body.node as { value?: string } | undefined)?.value === copy.value) {
        expect(seen).toBe(copy.value);
        break;
      }
      // The test's own refresher came too late (a very slow machine) and the key lapsed: the proof starts over.
      if (attempt === 3) throw new Error('the test could not keep its own source key alive');
      const lapsed = copy.value;
      await waitFor(() => refreshed.value() !== lapsed, 'the key to be set again');
      copy = await copyOf(refreshed.value());
      await crash();
    }
    await refreshed.stop();
    await raw(S, 'DELETE', '/demo/refreshed'); // the trees below are compared without a TTL running out meanwhile
    await caughtUp();
    const tree = await v3Tree(d, '/replica');
    expect(values(tree)).toEqual(await v2Leaves());
    // The destination's own log across both crashes: values were written in increasing order on the source, so
    // the destination must show them increasing (nothing reordered or rewound) and each write at most once.
    log.stop();
    const puts = log.log.flatMap((r) => r.events.filter((e) => e.type === 'put'));
    expect(puts.length).toBeGreaterThan(50);
    expect(rewoundValues(log.log, (k) => k.startsWith('/replica/load/'))).toEqual([]);
    const writes = puts.map((e) => `${e.kv.key.toString()}=${e.kv.value.toString()}`);
    expect(new Set(writes).size).toBe(writes.length);
    await m.kill('SIGTERM');
  });

  it('the lease-backed copy of a refreshed v2 TTL key is never absent while the source key exists, and goes after it (100 ms oracle)', async () => {
    const S = src.clientUrl;
    const m = await bridge(['--reload']);
    await m.waitForState('tailing');
    // Three keys a third of a second apart: their expirations fall at different phases of etcd's expiry tick.
    const keys = [0, 1, 2].map((i) => `/demo/locks/${i}`);
    const oracles = [];
    for (const key of keys) {
      await ok(S, 'PUT', key, { value: 'owner-1', ttl: 3 });
      const copyKey = b(key.replace(/^\/demo/, '/replica'));
      oracles.push(
        followPresence({
          source: async () => (await raw(S, 'GET', key)).status === 200,
          copy: async () => (await d.range(copyKey)).kvs.length > 0,
        }),
      );
      await sleep(333);
    }
    // Each refreshed about every second for 5 s (refresh=true: no watch event), then left to expire.
    const until = Date.now() + 5_000;
    while (Date.now() < until) {
      for (const key of keys) {
        await ok(S, 'PUT', key, { ttl: 3, refresh: true, prevExist: true });
        await sleep(333);
      }
    }
    const seen = await Promise.all(oracles.map((o) => o.untilGone()));
    expect(seen.map((r) => r.appeared)).toEqual(keys.map(() => true));
    expect(seen.flatMap((r, i) => r.early.map((e) => `${keys[i]}: ${e}`)), 'a copy vanished while the source still had the key').toEqual([]);
    expect(seen.map((r) => r.gone), 'a copy stayed after its source key went').toEqual(keys.map(() => true));
    await m.kill('SIGTERM');
  });
});
