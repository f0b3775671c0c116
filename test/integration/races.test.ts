// Races between replication, the TTL keeper, the healer and faults: a refresh never undoes a later source change,
// a released lock never reappears, a heal never moves a key back in time, and a failed destination write is
// retried where it failed instead of restarting the pipeline.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, sleep, storeIndex } from '../helpers/raw.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { waitFor } from '../helpers/wait.js';

let pair: Pair;
const mirrors: MirrorProcess[] = [];
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await Promise.all(mirrors.map((m) => m.kill('SIGTERM')));
  await pair?.stop();
});

interface Recorded {
  action: string;
  key: string;
  value?: string;
  at: number;
}

/** Records the destination's events under `prefix` until stopped. */
async function recordDestination(prefix: string): Promise<{ events: Recorded[]; stop(): void }> {
  const ac = new AbortController();
  const res = await request(`${pair.dst.clientUrl}/v2/keys${prefix}?wait=true&recursive=true&stream=true`, { signal: ac.signal });
  const events: Recorded[] = [];
  void (async () => {
    const decoder = new TextDecoder();
    let partial = '';
    try {
      for await (const chunk of res.body) {
        partial += decoder.decode(chunk as Buffer, { stream: true });
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
          const line = partial.slice(0, nl).trim();
          partial = partial.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line) as { action: string; node: { key: string; value?: string } };
          events.push({ action: ev.action, key: ev.node.key, value: ev.node.value, at: Date.now() });
        }
      }
    } catch {
      // stopped
    }
  })();
  return { events, stop: () => ac.abort() };
}

const start = async (prefix: string, extra: string[] = [], dst = pair.dst.clientUrl) => {
  const m = await spawnMirror(['--reload', '--src-prefix', prefix, '--dst-prefix', prefix, '--strip', ...extra, pair.src.clientUrl, dst]);
  mirrors.push(m);
  await m.waitForState('tailing');
  return m;
};

describe('TTL keeper', () => {
  it('a lock released on the source never reappears on the destination, and a key made permanent stays permanent', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/rl/lock', { value: 'owner', ttl: 3 });
    await ok(S, 'PUT', '/rl/perm', { value: 'v1', ttl: 3 });
    const m = await start('/rl');
    const rec = await recordDestination('/rl');
    for (let i = 0; i < 4; i++) {
      await ok(S, 'PUT', '/rl/lock', { ttl: 3, refresh: true, prevExist: true });
      await ok(S, 'PUT', '/rl/perm', { ttl: 3, refresh: true, prevExist: true });
      await sleep(700);
    }
    await ok(S, 'DELETE', '/rl/lock');
    await ok(S, 'PUT', '/rl/perm', { value: 'v2' }); // permanent from now on
    await waitForIndex(pair.dstClient, '/__replication/rl', await storeIndex(S));
    await sleep(5_000); // the keeper ticks every second: a stale refresh would show as an expiration below
    rec.stop();
    const lockEvents = rec.events.filter((e) => e.key === '/rl/lock');
    const released = lockEvents.findIndex((e) => e.action === 'delete');
    expect(released).toBeGreaterThanOrEqual(0);
    expect(lockEvents.slice(released + 1)).toEqual([]);
    expect((await raw(pair.dst.clientUrl, 'GET', '/rl/lock')).status).toBe(404);
    const perm = await raw(pair.dst.clientUrl, 'GET', '/rl/perm');
    expect(perm.status).toBe(200);
    expect(perm.body.node).toMatchObject({ value: 'v2' });
    expect((perm.body.node as { expiration?: string }).expiration).toBeUndefined();
    await m.kill('SIGTERM');
  });
});

describe('healer', () => {
  it('a heal never moves a key back in time, while writes to it keep coming', async () => {
    // The destination is 10 ms away, so strict replay (one write at a time) falls behind the source and a heal's
    // snapshot is far ahead of the writer: the events in between are queued behind the heal.
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(pair.dst.clientUrl).port) });
    proxy.setDelay(5);
    try {
      const S = pair.src.clientUrl;
      await ok(S, 'PUT', '/rw/seq', { value: '0' });
      const m = await start('/rw', ['--ordering', 'strict'], proxy.url);
      const rec = await recordDestination('/rw');
      for (let v = 1; v <= 600; v++) {
        await ok(S, 'PUT', '/rw/seq', { value: String(v) });
        if (v % 100 === 50) await ok(pair.dst.clientUrl, 'PUT', '/rw/seq', { value: 'edited by hand' });
      }
      await waitForIndex(pair.dstClient, '/__replication/rw', await storeIndex(S), 60_000);
      await expectTreesEqual(pair.srcClient, '/rw', pair.dstClient, '/rw', { timeoutMs: 10_000 });
      rec.stop();
      const values = rec.events.filter((e) => e.key === '/rw/seq' && e.value !== 'edited by hand').map((e) => Number(e.value));
      const backwards = values.filter((v, i) => i > 0 && v < values[i - 1]!);
      expect(backwards).toEqual([]);
      expect(values.at(-1)).toBe(600);
      const metrics = await m.metrics();
      expect(Number(/etcdmirror_healed_total\{reason="foreign change"\} (\d+)/.exec(metrics)?.[1] ?? 0)).toBeGreaterThanOrEqual(1);
      console.log(`heal without rewinds: ${/etcdmirror_events_skipped_total\{reason="covered"\} (\d+)/.exec(metrics)?.[1]} events already in a heal's snapshot were not replayed`);
      await m.kill('SIGTERM');
    } finally {
      await proxy.close();
    }
  });
});

describe('destination faults', () => {
  it('cut destination connections are retried per write: no restart, nothing lost, source order kept across keys', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(pair.dst.clientUrl).port) });
    try {
      const S = pair.src.clientUrl;
      await ok(S, 'PUT', '/rc/k', { value: '0' });
      // Strict: adaptive ordering may rightly let writes overlap if the backlog eats the window headroom, and
      // this test checks source order across keys.
      const m = await start('/rc', ['--ordering', 'strict'], proxy.url);
      const rec = await recordDestination('/rc');
      for (let v = 1; v <= 400; v++) {
        await ok(S, 'PUT', `/rc/k`, { value: String(v) });
        await ok(S, 'PUT', `/rc/u${v}`, { value: String(v) });
        if (v % 50 === 0) proxy.cut();
      }
      await waitForIndex(pair.dstClient, '/__replication/rc', await storeIndex(S), 30_000);
      await expectTreesEqual(pair.srcClient, '/rc', pair.dstClient, '/rc');
      rec.stop();
      const values = rec.events.filter((e) => e.key === '/rc/k').map((e) => Number(e.value));
      expect(values.filter((v, i) => i > 0 && v < values[i - 1]!)).toEqual([]);
      // Across keys too: the source wrote k=v, then u<v>; each destination change at its source position.
      const positions = rec.events.filter((e) => e.key !== '/rc/k' || e.value !== '0').map((e) => (e.key === '/rc/k' ? 2 * Number(e.value) - 1 : 2 * Number(e.key.slice('/rc/u'.length))));
      // (A write retried after its answer was lost is applied twice in a row: the same state again, allowed.)
      const bad = positions.flatMap((p, i) => (i > 0 && p < positions[i - 1]! ? [positions.slice(Math.max(0, i - 4), i + 3).join(',')] : []));
      expect(bad).toEqual([]);
      expect(m.logs.some((l) => l.to === 'stalled')).toBe(false);
      expect(m.logs.filter((l) => l.to === 'tailing')).toHaveLength(1);
      await m.kill('SIGTERM');
    } finally {
      await proxy.close();
    }
  });
});

describe('late events', () => {
  it('a TTL key that expired before the mirror applied its set still leaves the directories its set made', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/re/seed', { value: 's' });
    const first = await start('/re');
    await waitForIndex(pair.dstClient, '/__replication/re', await storeIndex(S));
    await first.kill('SIGTERM');
    // The set makes `/re/d e` and `/re/d e/x` on the source; the key expires there and its parents stay.
    await ok(S, 'PUT', '/re/d e/x/k', { value: 'short', ttl: 1 });
    await waitFor(async () => (await raw(S, 'GET', '/re/d e/x/k')).status === 404, 'the source key to expire', 10_000);
    // Resumed from its checkpoint, the mirror gets the set from history after its expiration.
    const m = await spawnMirror(['--src-prefix', '/re', '--dst-prefix', '/re', '--strip', S, pair.dst.clientUrl]);
    mirrors.push(m);
    await waitForIndex(pair.dstClient, '/__replication/re', await storeIndex(S));
    await expectTreesEqual(pair.srcClient, '/re', pair.dstClient, '/re');
    expect((await raw(pair.dst.clientUrl, 'GET', '/re/d e/x')).body.node).toMatchObject({ dir: true });
    await m.kill('SIGTERM');
  });
});
