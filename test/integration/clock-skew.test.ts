// TTL copies when the mirror host's wall clock is off: the remaining TTL of a copy must follow the source's clock,
// not the mirror's. The mirror runs under libfaketime (LD_PRELOAD, its clock ±20 s off); the etcds and this test
// run on the real clock. Found in production: with the mirror 20 s ahead, a ttl=8 key never reached the replica.
import { existsSync } from 'node:fs';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { followPresence, type PresenceOracle } from '../helpers/oracle.js';
import { ok, raw, sleep } from '../helpers/raw.js';
import { COPY_TTL_MARGIN_S } from '../../src/replication/copy-ttl.js';

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
/** Lock keys refreshed at a quarter of this: short, so the test is too. */
const LOCK_TTL = 4;
/** How long a written key may take to show up on the destination (an upper bound on a slow machine). */
const APPEAR_WITHIN_MS = 5_000;

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

/** Follows `key` on both sides at 100 ms resolution through its whole life (test/helpers/oracle.ts). */
const follow = (key: string): PresenceOracle =>
  followPresence({
    source: async () => (await raw(pair.src.clientUrl, 'GET', key)).status === 200,
    copy: async () => (await raw(pair.dst.clientUrl, 'GET', key)).status === 200,
  });

const title = LIBFAKETIME
  ? 'TTL copies with the mirror clock off the etcds'
  : 'TTL copies with the mirror clock off the etcds — SKIPPED: libfaketime is not installed (apt-get install faketime, or run scripts/setup.sh)';
if (!LIBFAKETIME) console.warn(`clock-skew.test.ts: ${title}`);

describe.skipIf(!LIBFAKETIME)(title, () => {
  describe.each([
    { offset: 20, tag: 'ahead' },
    { offset: -20, tag: 'behind' },
  ])('mirror clock $offset s ($tag)', ({ offset, tag }) => {
    it(`(a) a ttl=${TTL} key written while tailing appears with the source's TTL plus the margin, and is never absent while the source key exists`, async () => {
      const prefix = `/skew-${tag}-a`;
      await skewedMirror(prefix, offset);
      const key = `${prefix}/lease`;
      const written = await ok(pair.src.clientUrl, 'PUT', key, { value: 'holder-1', ttl: TTL });
      const oracle = follow(key);
      const srcExpiration = Date.parse(nodeOf(written).expiration!);

      const copy = await waitForCopy(key);
      expect(copy, `the copy of a ttl=${TTL} key never appeared on the destination within ${APPEAR_WITHIN_MS} ms`).toBeDefined();
      expect(copy!.value).toBe('holder-1');
      expect(copy!.expiration, 'the copy must keep a TTL').toBeDefined();
      // The source's expiration plus the margin (src/replication/copy-ttl.ts), from the source's clock: the
      // mirror's 20 s would show here.
      const delta = Date.parse(copy!.expiration!) - srcExpiration;
      expect(delta, `copy expires ${delta} ms after the source key`).toBeGreaterThan(0);
      expect(delta, `copy expires ${delta} ms after the source key`).toBeLessThan((COPY_TTL_MARGIN_S + 2) * 1000);

      const seen = await oracle.untilGone();
      console.log(`clock ${offset} s, (a): copy expiration − source expiration ${delta} ms; copy gone ${Date.now() - srcExpiration} ms after the source's expiration; ${seen.polls} polls, widest gap ${seen.widestGapMs} ms`);
      expect(seen.early, 'the copy vanished while the source still had the key').toEqual([]);
      expect(seen.gone, 'the copy stayed after the source key went').toBe(true);
    }, 60_000);

    it(`(b) refreshed ttl=${LOCK_TTL} keys stay on the destination whenever the source has them (100 ms oracle), and go after them`, async () => {
      const prefix = `/skew-${tag}-b`;
      await skewedMirror(prefix, offset);
      // Four keys a quarter second apart: their expirations fall at different phases of the etcds' expiry ticks.
      const keys = [0, 1, 2, 3].map((i) => `${prefix}/lock${i}`);
      const oracles: PresenceOracle[] = [];
      for (const key of keys) {
        await ok(pair.src.clientUrl, 'PUT', key, { value: 'owner-1', ttl: LOCK_TTL });
        oracles.push(follow(key));
        await sleep(250);
      }
      // Each refreshed every second for 6 s (refresh=true: no watch event), then left to expire.
      const until = Date.now() + 6_000;
      while (Date.now() < until) {
        for (const key of keys) {
          await ok(pair.src.clientUrl, 'PUT', key, { ttl: LOCK_TTL, refresh: true, prevExist: true });
          await sleep(250);
        }
      }
      const seen = await Promise.all(oracles.map((o) => o.untilGone()));
      console.log(`clock ${offset} s, (b): ${seen.map((r) => `${r.polls} polls, widest gap ${r.widestGapMs} ms`).join('; ')}`);
      expect(seen.map((r) => r.appeared)).toEqual(keys.map(() => true));
      expect(seen.flatMap((r, i) => r.early.map((e) => `${keys[i]}: ${e}`)), 'a copy vanished while the source still had the key').toEqual([]);
      expect(seen.map((r) => r.gone), 'a copy stayed after its source key went').toEqual(keys.map(() => true));
    }, 60_000);
  });
});
