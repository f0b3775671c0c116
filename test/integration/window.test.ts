// The 1000-event history window: a quiet prefix keeps its index current, and falling out of the window is
// recovered automatically from a snapshot, without emptying the replica.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { ok, raw, sleep, storeIndex, writeMany } from '../helpers/raw.js';

let pair: Pair;
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await pair?.stop();
});

/**
 * Writes `n` keys under `prefix` at `perSecond` (paced on a fixed clock, `concurrency` requests at most in
 * flight). The rate is controlled, not "as fast as etcd takes them": at full speed on a small shared machine the
 * 1000-event window lasts ~150 ms, and whether a reconnect fits into it measures the machine, not the mirror
 * (bench/ measures speed). At these rates the window lasts 0.7–1 s, far more than any step needs.
 */
async function burst(baseUrl: string, prefix: string, n: number, perSecond: number, concurrency = 16): Promise<void> {
  let next = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        const due = started + (i * 1000) / perSecond;
        if (due > Date.now()) await sleep(due - Date.now());
        const res = await request(`${baseUrl}/v2/keys${prefix}/k${i}`, { method: 'PUT', body: 'value=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
        await res.body.dump();
      }
    }),
  );
}

describe('history window', () => {
  it('keeps the stored index current while the prefix is quiet, so a restart needs no recovery', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/conftool/a', { value: '1' });
    const args = ['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', S, pair.dst.clientUrl];
    const m = await spawnMirror(['--reload', ...args]);
    await m.waitForState('tailing');
    let maxLag = 0;
    const sampler = setInterval(() => {
      void Promise.all([storeIndex(S), raw(pair.dst.clientUrl, 'GET', '/__replication/conftool')]).then(([src, dst]) => {
        maxLag = Math.max(maxLag, src - Number((dst.body.node as { value: string }).value));
      }, () => {});
    }, 50);
    await burst(S, '/spicerack', 5_000, 1_500);
    clearInterval(sampler);
    const end = await storeIndex(S);
    await waitForIndex(pair.dstClient, '/__replication/conftool', end, 5_000);
    expect(maxLag).toBeLessThan(1000);
    console.log(`quiet prefix: max stored-index lag during 5000 writes elsewhere at 1500/s: ${maxLag}`);
    expect(await m.kill('SIGTERM')).toBe(0);

    const again = await spawnMirror(args);
    await again.waitForState('tailing');
    await ok(S, 'PUT', '/conftool/b', { value: '2' });
    await waitForIndex(pair.dstClient, '/__replication/conftool', await storeIndex(S));
    await expectTreesEqual(pair.srcClient, '/conftool', pair.dstClient, '/conftool');
    expect(again.logs.some((l) => l.to === 'outOfWindow')).toBe(false);
    await again.kill('SIGTERM');
  });

  it('resumes without a 401 after its source connection is cut during a busy quiet period', async () => {
    const S = pair.src.clientUrl;
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(S).port) });
    try {
      await ok(S, 'PUT', '/cut/a', { value: '1' });
      const m = await spawnMirror(['--reload', '--src-prefix', '/cut', '--dst-prefix', '/cut', '--strip', proxy.url, pair.dst.clientUrl]);
      await m.waitForState('tailing');
      const load = burst(S, '/busy', 3_000, 1_000);
      await sleep(1_000);
      proxy.cut();
      await load;
      await ok(S, 'PUT', '/cut/b', { value: '2' });
      await waitForIndex(pair.dstClient, '/__replication/cut', await storeIndex(S));
      await expectTreesEqual(pair.srcClient, '/cut', pair.dstClient, '/cut');
      const faults = m.logs.filter((l) => l.to === 'outOfWindow' || l.to === 'stalled').map((l) => String(l.reason));
      expect(faults).toEqual([]);
      expect(m.logs.some((l) => l.to === 'outOfWindow')).toBe(false);
      expect(await m.metrics()).toMatch(/etcdmirror_out_of_window_total 0/);
      await m.kill('SIGTERM');
    } finally {
      await proxy.close();
    }
  });

  it('recovers by itself after 1500 events happened while it was stopped', async () => {
    const S = pair.src.clientUrl;
    const args = ['--src-prefix', '/win', '--dst-prefix', '/win', '--strip', S, pair.dst.clientUrl];
    for (let i = 0; i < 50; i++) await ok(S, 'PUT', `/win/stable/k${i}`, { value: 'unchanged' });
    await ok(S, 'PUT', '/win/dir/a', { value: 'x' });
    const m = await spawnMirror(['--reload', ...args]);
    await m.waitForState('tailing');
    await waitForIndex(pair.dstClient, '/__replication/win', await storeIndex(S));
    expect(await m.kill('SIGTERM')).toBe(0);

    await writeMany(1_500, async (i) => {
      const k = `/win/churn/k${i % 40}`;
      if (i % 10 === 3) await raw(S, 'DELETE', k);
      else if (i % 50 === 7) await raw(S, 'DELETE', '/win/churn', { recursive: true });
      else await ok(S, 'PUT', k, { value: `v${i}` });
    });
    await ok(S, 'DELETE', '/win/dir', { recursive: true });

    const recorder = await request(`${pair.dst.clientUrl}/v2/keys/win?wait=true&recursive=true&stream=true`, { signal: AbortSignal.timeout(20_000) });
    const seen: string[] = [];
    void (async () => {
      try {
        for await (const chunk of recorder.body) seen.push(chunk.toString());
      } catch {
        // aborted at the end of the test
      }
    })();
    const again = await spawnMirror(args);
    await again.waitForState((s) => s.state === 'tailing' && again.logs.some((l) => l.to === 'recovering'), 30_000);
    await expectTreesEqual(pair.srcClient, '/win', pair.dstClient, '/win');
    expect(again.logs.some((l) => l.to === 'outOfWindow')).toBe(true);
    expect(await again.metrics()).toMatch(/etcdmirror_out_of_window_total 1/);
    const touchedStable = seen.join('').split('\n').filter((l) => l.includes('/win/stable/'));
    expect(touchedStable).toEqual([]);
    await again.kill('SIGTERM');
  });

  it('recovers by itself after a busy outage that deleted most of a small replica while the source grew fivefold', async () => {
    // The mass-delete guard judges the snapshot, not the diff: 121 of 235 replica keys deleted is plausible when
    // the source now holds ~1,200 keys.
    const S = pair.src.clientUrl;
    const args = ['--src-prefix', '/grow', '--dst-prefix', '/grow', '--strip', S, pair.dst.clientUrl];
    await writeMany(235, (i) => ok(S, 'PUT', `/grow/old/k${i}`, { value: `v${i}` }));
    const m = await spawnMirror(['--reload', ...args]);
    await m.waitForState('tailing');
    await waitForIndex(pair.dstClient, '/__replication/grow', await storeIndex(S));
    expect(await m.kill('SIGTERM')).toBe(0);

    await writeMany(121, (i) => ok(S, 'DELETE', `/grow/old/k${i}`));
    await writeMany(1_100, (i) => ok(S, 'PUT', `/grow/new/k${i}`, { value: `n${i}` }));

    const again = await spawnMirror(args);
    try {
      await again.waitForState((s) => s.state === 'tailing' && again.logs.some((l) => l.to === 'recovering'), 30_000);
      await expectTreesEqual(pair.srcClient, '/grow', pair.dstClient, '/grow');
      expect(again.logs.some((l) => l.to === 'stalled')).toBe(false);
      expect(await again.metrics()).toMatch(/etcdmirror_mass_delete_refused_total 0/);
    } finally {
      await again.kill('SIGTERM');
    }
  });
});
