// TTL copies when the mirror host's wall clock is off: the remaining TTL of a copy must follow the source's clock,
// not the mirror's. The mirror runs under libfaketime (LD_PRELOAD, its clock ±20 s off); the etcds and this test
// run on the real clock. Found in production: with the mirror 20 s ahead, a ttl=8 key never reached the replica.
import { existsSync } from 'node:fs';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, sleep } from '../helpers/raw.js';

/** Debian's libfaketime (package faketime → libfaketime; scripts/setup.sh installs it). */
const LIBFAKETIME = ['x86_64-linux-gnu', 'aarch64-linux-gnu', 'arm-linux-gnueabihf', 'i386-linux-gnu']
  .map((arch) => `/usr/lib/${arch}/faketime/libfaketime.so.1`)
  .find((p) => existsSync(p));

/**
 * The mirror's environment for a wall clock `offsetS` seconds off. Checked by hand with Node 20 and libfaketime
 * 0.9.10: `new Date()` and `Date.now()` are shifted, timers keep their real durations. The monotonic clock
 * (libuv's timers, performance.now) is left alone: a constant offset there would be harmless, but the real one
 * cannot go below zero. No FAKETIME_NO_CACHE: the offset is fixed, there is nothing to re-read.
 */
const skewedEnv = (offsetS: number): Record<string, string> => ({
  LD_PRELOAD: LIBFAKETIME!,
  FAKETIME: `${offsetS >= 0 ? '+' : ''}${offsetS}s`,
  FAKETIME_DONT_FAKE_MONOTONIC: '1',
});

const TTL = 8;
/** How long a written key may take to show up on the destination (an upper bound on a slow machine). */
const APPEAR_WITHIN_MS = 5_000;
/** The copy must be gone at most this long after the source key's expiration. */
const LINGER_MAX_MS = 5_000;

let pair: Pair;
const mirrors: MirrorProcess[] = [];
beforeAll(async () => {
  if (LIBFAKETIME) pair = await startPair();
});
afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.kill('SIGTERM')));
});
afterAll(async () => {
  await pair?.stop();
});

type Node = { value?: string; expiration?: string; ttl?: number };
const nodeOf = (r: { body: Record<string, unknown> }) => r.body.node as Node;

/** Starts a mirror of `prefix` whose clock is `offsetS` off, and checks the offset took effect in the process. */
async function skewedMirror(prefix: string, offsetS: number): Promise<MirrorProcess> {
  const m = await spawnMirror(['--reload', '--src-prefix', prefix, '--dst-prefix', prefix, '--strip', pair.src.clientUrl, pair.dst.clientUrl], {
    env: skewedEnv(offsetS),
  });
  mirrors.push(m);
  await m.waitForState('tailing', 30_000);
  // Node's HTTP server dates its answers with the process's clock: that is the mirror's view of "now".
  const before = Date.now();
  const res = await request(`http://127.0.0.1:${m.port}/healthz`);
  await res.body.dump();
  const after = Date.now();
  const mirrorNow = Date.parse(String(res.headers.date));
  const skew = (mirrorNow - (before + after) / 2) / 1000;
  expect(Math.abs(skew - offsetS), `mirror clock should be ${offsetS} s off, is ${skew.toFixed(1)} s off (Date: ${res.headers.date})`).toBeLessThan(2);
  // The mirror's own estimate of the source's clock, from the source's Date headers, sees the offset too.
  const state = await m.state();
  const estimated = (state.source as { clockOffsetMs: number }).clockOffsetMs / 1000;
  expect(Math.abs(estimated + offsetS), `/state source.clockOffsetMs ${estimated} s, expected ${-offsetS} s`).toBeLessThan(2);
  return m;
}

/** Polls the destination until `key` is there (at most APPEAR_WITHIN_MS); undefined if it never appears. */
async function waitForCopy(key: string): Promise<Node | undefined> {
  const deadline = Date.now() + APPEAR_WITHIN_MS;
  for (;;) {
    const r = await raw(pair.dst.clientUrl, 'GET', key);
    if (r.status === 200) return nodeOf(r);
    if (Date.now() >= deadline) return undefined;
    await sleep(50);
  }
}

/**
 * Samples the copy every 250 ms until the source key is gone (bounded by its expiration + 5 s): each time the
 * copy is absent while the source, read right after, still has the key is an early vanish. Returns those, and
 * the source's last expiration.
 */
async function sampleUntilSourceExpires(key: string, expiration: number): Promise<{ early: string[]; expiration: number }> {
  const early: string[] = [];
  const started = Date.now();
  while (Date.now() < expiration + 5_000) {
    const copy = await raw(pair.dst.clientUrl, 'GET', key);
    const src = await raw(pair.src.clientUrl, 'GET', key);
    if (src.status === 404) break;
    expiration = Date.parse(nodeOf(src).expiration!);
    if (copy.status !== 200) early.push(`absent at +${Date.now() - started} ms, source key expires in ${expiration - Date.now()} ms`);
    await sleep(250);
  }
  return { early, expiration };
}

/** Milliseconds from the source key's expiration until the copy is gone (polled every 100 ms, up to +15 s). */
async function lingerAfter(key: string, expiration: number): Promise<number> {
  while (Date.now() < expiration + 15_000) {
    if ((await raw(pair.dst.clientUrl, 'GET', key)).status === 404) return Date.now() - expiration;
    await sleep(100);
  }
  return Infinity;
}

const title = LIBFAKETIME
  ? 'TTL copies with the mirror clock off the etcds'
  : 'TTL copies with the mirror clock off the etcds — SKIPPED: libfaketime is not installed (apt-get install faketime, or run scripts/setup.sh)';
if (!LIBFAKETIME) console.warn(`clock-skew.test.ts: ${title}`);

describe.skipIf(!LIBFAKETIME)(title, () => {
  describe.each([
    { offset: 20, tag: 'ahead' },
    { offset: -20, tag: 'behind' },
  ])('mirror clock $offset s ($tag)', ({ offset, tag }) => {
    it(`(a) a ttl=${TTL} key written while tailing appears with a TTL and lives exactly as long as the source key`, async () => {
      const prefix = `/skew-${tag}-a`;
      await skewedMirror(prefix, offset);
      const key = `${prefix}/lease`;
      const written = await ok(pair.src.clientUrl, 'PUT', key, { value: 'holder-1', ttl: TTL });
      const srcExpiration = Date.parse(nodeOf(written).expiration!);

      const copy = await waitForCopy(key);
      expect(copy, `the copy of a ttl=${TTL} key never appeared on the destination within ${APPEAR_WITHIN_MS} ms`).toBeDefined();
      expect(copy!.value).toBe('holder-1');
      expect(copy!.expiration, 'the copy must keep a TTL').toBeDefined();
      const delta = Date.parse(copy!.expiration!) - srcExpiration;
      expect(delta, `copy expires ${delta} ms after the source key`).toBeGreaterThan(-1_000);
      expect(delta, `copy expires ${delta} ms after the source key`).toBeLessThan(LINGER_MAX_MS);

      const { early, expiration } = await sampleUntilSourceExpires(key, srcExpiration);
      expect(early, 'the copy vanished while the source still had the key').toEqual([]);
      const linger = await lingerAfter(key, expiration);
      console.log(`clock ${offset} s, (a): copy expiration − source expiration ${delta} ms; gone ${linger} ms after the source's expiration`);
      expect(linger, 'the copy outlived the source key').toBeLessThanOrEqual(LINGER_MAX_MS);
    }, 60_000);

    it(`(b) a ttl=${TTL} key refreshed every 2 s stays on the destination throughout and goes soon after the source's expiry`, async () => {
      const prefix = `/skew-${tag}-b`;
      await skewedMirror(prefix, offset);
      const key = `${prefix}/lock`;
      const written = await ok(pair.src.clientUrl, 'PUT', key, { value: 'owner-1', ttl: TTL });
      let srcExpiration = Date.parse(nodeOf(written).expiration!);
      const copy = await waitForCopy(key);
      expect(copy, `the copy of a ttl=${TTL} key never appeared on the destination within ${APPEAR_WITHIN_MS} ms`).toBeDefined();

      // Refresh every 2 s for 12 s (refresh=true: no watch event), sampling the copy every 250 ms.
      const absent: string[] = [];
      const started = Date.now();
      let refreshedAt = started;
      while (Date.now() - started < 12_000) {
        if (Date.now() - refreshedAt >= 2_000) {
          const r = await ok(pair.src.clientUrl, 'PUT', key, { ttl: TTL, refresh: true, prevExist: true });
          srcExpiration = Date.parse(nodeOf(r).expiration!);
          refreshedAt = Date.now();
        }
        if ((await raw(pair.dst.clientUrl, 'GET', key)).status !== 200) absent.push(`absent at +${Date.now() - started} ms`);
        await sleep(250);
      }
      expect(absent, 'the copy vanished while the source kept refreshing the key').toEqual([]);

      // No more refreshes: the source key expires; the copy must last until then, and not much longer.
      const { early, expiration } = await sampleUntilSourceExpires(key, srcExpiration);
      expect(early, 'the copy vanished before the source key expired').toEqual([]);
      const linger = await lingerAfter(key, expiration);
      console.log(`clock ${offset} s, (b): copy gone ${linger} ms after the source key's expiration`);
      expect(linger, 'the copy outlived the source key').toBeLessThanOrEqual(LINGER_MAX_MS);
    }, 90_000);
  });
});
