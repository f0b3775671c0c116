// TTL refreshes produce no watch event; the destination copy must live exactly as long as the source key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, sleep } from '../helpers/raw.js';
import { COPY_TTL_MARGIN_S } from '../../src/replication/copy-ttl.js';

let pair: Pair;
const mirrors: MirrorProcess[] = [];
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await Promise.all(mirrors.map((m) => m.kill('SIGTERM')));
  await pair?.stop();
});

const args = () => ['--src-prefix', '/locks', '--dst-prefix', '/locks', '--strip', pair.src.clientUrl, pair.dst.clientUrl];

/** Refreshes `key` (ttl 3) every second for `seconds`, checking the destination copy 4 times a second. */
async function refreshAndWatch(key: string, seconds: number, during?: (second: number) => Promise<void>): Promise<string[]> {
  const gaps: string[] = [];
  const started = Date.now();
  for (let s = 0; s < seconds; s++) {
    await ok(pair.src.clientUrl, 'PUT', key, { ttl: 3, refresh: true, prevExist: true });
    await during?.(s);
    for (let q = 0; q < 4; q++) {
      const copy = await raw(pair.dst.clientUrl, 'GET', key);
      if (copy.status !== 200) gaps.push(`absent at +${Date.now() - started} ms`);
      await sleep(250);
    }
  }
  return gaps;
}

/** Milliseconds until the destination copy disappears after the source key expires. */
async function lingerAfterExpiry(key: string): Promise<number> {
  const exp = Date.parse(((await raw(pair.src.clientUrl, 'GET', key)).body.node as { expiration: string }).expiration);
  for (;;) {
    if ((await raw(pair.dst.clientUrl, 'GET', key)).status === 404) return Date.now() - exp;
    await sleep(100);
  }
}

describe('TTL refreshes', () => {
  it('keeps a refreshed lock key alive on the destination and lets it go soon after the source key expires', async () => {
    await ok(pair.src.clientUrl, 'PUT', '/locks/a', { value: 'owner-1', ttl: 3 });
    const m = await spawnMirror(['--reload', ...args()]);
    mirrors.push(m);
    await m.waitForState('tailing');
    expect(await refreshAndWatch('/locks/a', 15)).toEqual([]);
    const linger = await lingerAfterExpiry('/locks/a');
    expect(linger).toBeLessThan(3_000);
    expect(await m.metrics()).toMatch(/etcdmirror_ttl_refreshes_total [1-9]/);
  });

  it('does the same when the mirror is killed and restarted in between', async () => {
    await ok(pair.src.clientUrl, 'PUT', '/locks/b', { value: 'owner-2', ttl: 3 });
    let m = await spawnMirror(args());
    mirrors.push(m);
    await m.waitForState('tailing');
    const gaps = await refreshAndWatch('/locks/b', 15, async (s) => {
      if (s !== 5) return;
      await m.kill('SIGKILL');
      m = await spawnMirror(args());
      mirrors.push(m);
    });
    expect(gaps).toEqual([]);
    expect(await lingerAfterExpiry('/locks/b')).toBeLessThan(3_000);
  });

  it('a killed mirror leaves no immortal copies: they expire on their own', async () => {
    // No other mirror of /locks may replay the source's expire.
    await Promise.all(mirrors.splice(0).map((m) => m.kill('SIGTERM')));
    await ok(pair.src.clientUrl, 'PUT', '/locks/c', { value: 'owner-3', ttl: 3 });
    const m = await spawnMirror(args());
    mirrors.push(m);
    await m.waitForState('tailing');
    await sleep(500);
    expect((await raw(pair.dst.clientUrl, 'GET', '/locks/c')).status).toBe(200);
    await m.kill('SIGKILL');
    // Its TTL is at most the source's 3 s plus the margin (copy-ttl.ts): it goes without anyone removing it.
    const deadline = Date.now() + (3 + COPY_TTL_MARGIN_S + 2) * 1000;
    while ((await raw(pair.dst.clientUrl, 'GET', '/locks/c')).status === 200 && Date.now() < deadline) await sleep(100);
    expect((await raw(pair.dst.clientUrl, 'GET', '/locks/c')).status).toBe(404);
  });
});
