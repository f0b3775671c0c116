// The cluster-clock estimate from `Date` headers: every time is injected, no real clock is read.
import { describe, expect, it } from 'vitest';
import { ServerClock } from '../../../src/etcd/v2/clock.js';

/** What a Go server writes: its clock at the answer, truncated to the second, as an HTTP-date. */
const httpDate = (serverMs: number): string => new Date(Math.floor(serverMs / 1000) * 1000).toUTCString();

/**
 * Simulates one request: sent at local time `t`, answered after `toServer` ms, received `back` ms later,
 * by a server whose clock is ours + `offset`.
 */
function ask(clock: ServerClock, t: number, offset: number, toServer = 1, back = 1): void {
  clock.observe(t, t + toServer + back, httpDate(t + toServer + offset));
}

describe('ServerClock', () => {
  it('is our clock before any answer', () => {
    let local = 1_700_000_000_000;
    const clock = new ServerClock({ now: () => local });
    expect(clock.offsetMs()).toBe(0);
    expect(clock.uncertaintyMs()).toBe(Infinity);
    expect(clock.now()).toBe(local);
    local += 5;
    expect(clock.now()).toBe(local);
    clock.observe(local, local + 1, undefined);
    clock.observe(local, local + 1, 'not a date');
    expect(clock.offsetMs()).toBe(0);
    expect(clock.stats().samples).toBe(0);
  });

  it('one answer bounds the offset to the interval its header allows', () => {
    const clock = new ServerClock({ now: () => 0 });
    // Sent at 1000.250, received at 1000.260 (local); header says 1003 (server second).
    clock.sample(1_000_250, 1_000_260, 1_003_000);
    // offset ∈ [1003000 − 1000260, 1004000 − 1000250] = [2740, 3750]
    expect(clock.offsetMs()).toBe((2740 + 3750) / 2);
    expect(clock.uncertaintyMs()).toBe((3750 - 2740) / 2);
  });

  it('converges on the true offset from answers at different phases of the second', () => {
    for (const offset of [0, 7_321, -123_456, 0.5, 86_400_000 + 999]) {
      let local = 1_800_000_000_123;
      const clock = new ServerClock({ now: () => local });
      for (let i = 0; i < 1_000; i++) {
        ask(clock, local, offset, 1 + (i % 3), 1 + (i % 2));
        local += 37; // 37 ms apart: the answers sweep through every phase of the server's second
      }
      // Round trips of 2–3 ms; the answers closest to a second boundary come once in ~30 s at this spacing, and
      // bounds widen by 0.5 ms per second meanwhile (the drift allowance): a few ms, far below TTL resolution.
      expect(Math.abs(clock.offsetMs() - offset)).toBeLessThanOrEqual(clock.uncertaintyMs());
      expect(clock.uncertaintyMs()).toBeLessThanOrEqual(20);
      expect(clock.now() - local).toBeCloseTo(clock.offsetMs(), 2);
      expect(clock.stats()).toEqual({ samples: 1_000, restarts: 0 });
    }
  });

  it('never excludes the true offset, whatever the delays', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    const offset = 2_345.678;
    let local = 1_750_000_000_000;
    const clock = new ServerClock({ now: () => local });
    for (let i = 0; i < 2_000; i++) {
      const toServer = random() * 40;
      const back = random() * 40;
      ask(clock, local, offset, toServer, back);
      const half = clock.uncertaintyMs();
      expect(Math.abs(clock.offsetMs() - offset)).toBeLessThanOrEqual(half + 1e-9);
      local += random() * 300;
    }
    expect(clock.stats().restarts).toBe(0);
  });

  it('restarts from the sample that contradicts it (a clock step)', () => {
    let local = 1_800_000_000_000;
    const clock = new ServerClock({ now: () => local });
    for (let i = 0; i < 1_000; i++, local += 37) ask(clock, local, 1_000);
    expect(Math.abs(clock.offsetMs() - 1_000)).toBeLessThanOrEqual(20);
    // The server's clock steps back by 10 s.
    ask(clock, local, -9_000);
    expect(clock.stats().restarts).toBe(1);
    expect(Math.abs(clock.offsetMs() - -9_000)).toBeLessThanOrEqual(1_000);
    for (let i = 0; i < 1_000; i++, local += 37) ask(clock, local, -9_000);
    expect(Math.abs(clock.offsetMs() - -9_000)).toBeLessThanOrEqual(Math.min(20, clock.uncertaintyMs()));
    expect(clock.stats().restarts).toBe(1);
  });

  it('follows a drifting server clock without restarting', () => {
    let local = 1_800_000_000_000;
    const clock = new ServerClock({ now: () => local, windowMs: 60_000, buckets: 6, driftPpm: 500 });
    // The server runs 400 ppm fast (0.4 ms per second of ours), answered every 37 ms for 10 minutes.
    const start = local;
    for (; local < start + 600_000; local += 37) {
      ask(clock, local, ((local - start) * 400) / 1e6);
      const truth = ((local + 2 - start) * 400) / 1e6;
      expect(Math.abs(clock.offsetMs() - truth)).toBeLessThanOrEqual(clock.uncertaintyMs() + 1e-6);
    }
    expect(Math.abs(clock.offsetMs() - 240)).toBeLessThanOrEqual(10);
    expect(clock.stats().restarts).toBe(0);
  });

  it('drops old bounds that a faster drift contradicts, and restarts only on a step', () => {
    let local = 1_800_000_000_000;
    const clock = new ServerClock({ now: () => local, windowMs: 60_000, buckets: 6, driftPpm: 0 });
    // Without drift allowance every bucket is exact: a 0.5 ms/s drift makes older buckets contradict new answers.
    const start = local;
    for (; local < start + 120_000; local += 37) ask(clock, local, (local - start) / 2_000);
    expect(Math.abs(clock.offsetMs() - 60)).toBeLessThanOrEqual(20);
    const restarts = clock.stats().restarts;
    // A step of the server's clock by one minute contradicts every bucket.
    ask(clock, local, 60 + 60_000);
    expect(clock.stats().restarts).toBe(restarts + 1);
    expect(Math.abs(clock.offsetMs() - 60_060)).toBeLessThanOrEqual(1_000);
  });

  it('forgets answers that left the window', () => {
    let local = 1_800_000_000_000;
    const clock = new ServerClock({ now: () => local, windowMs: 60_000, buckets: 6, driftPpm: 0 });
    for (let i = 0; i < 1_000; i++, local += 37) ask(clock, local, 500);
    expect(clock.uncertaintyMs()).toBeLessThanOrEqual(5);
    // Two minutes later, one answer: the old tight bounds are gone, only this answer's ~1 s range is left.
    local += 120_000;
    ask(clock, local, 500);
    expect(clock.uncertaintyMs()).toBeGreaterThan(400);
    expect(clock.stats().restarts).toBe(0);
  });

  it('keeps the estimate when our clock steps back a little, and drops a request during which it did', () => {
    let local = 1_800_000_000_000;
    const clock = new ServerClock({ now: () => local });
    for (let i = 0; i < 50; i++, local += 53) ask(clock, local, 250);
    const before = clock.offsetMs();
    clock.sample(local, local - 5, Math.floor((local + 250) / 1000) * 1000); // received "before" sent: ignored
    expect(clock.offsetMs()).toBe(before);
    expect(clock.stats().samples).toBe(50);
  });

  it('parses each distinct Date header once and handles several answers within one second', () => {
    const clock = new ServerClock({ now: () => 0, driftPpm: 0 });
    const d = 'Thu, 26 Nov 2026 02:53:01 GMT';
    const serverMs = Date.parse(d);
    clock.observe(serverMs - 500, serverMs - 490, d); // offset ∈ [490, 1500]
    clock.observe(serverMs + 200, serverMs + 210, d); // offset ∈ [−210, 800]
    expect(clock.offsetMs()).toBe((490 + 800) / 2);
  });
});
