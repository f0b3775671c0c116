import { describe, expect, it } from 'vitest';
import { RateMeter, readiness } from '../../src/daemon/health.js';
import { windowHeadroom } from '../../src/replication/window.js';

describe('windowHeadroom', () => {
  it('is what is left of the 1000-event window, never negative', () => {
    expect(windowHeadroom(0)).toBe(1000);
    expect(windowHeadroom(720)).toBe(280);
    expect(windowHeadroom(1500)).toBe(0);
    expect(windowHeadroom(null)).toBeNull();
  });
});

describe('readiness', () => {
  it('is ready only while tailing with at least 200 events of headroom', () => {
    expect(readiness('tailing', 'x', 1000)).toEqual({ ready: true, why: 'tailing, window headroom 1000 events' });
    expect(readiness('tailing', 'x', 200).ready).toBe(true);
    expect(readiness('tailing', 'x', 199)).toEqual({ ready: false, why: 'window headroom 199 events, below 200' });
    expect(readiness('tailing', 'x', null).ready).toBe(false);
    expect(readiness('stalled', 'http://dst:2379: ECONNREFUSED', 1000)).toEqual({ ready: false, why: 'state stalled: http://dst:2379: ECONNREFUSED' });
  });
});

describe('RateMeter', () => {
  it('averages over the window', () => {
    const r = new RateMeter(5_000);
    expect(r.perSecond()).toBe(0);
    for (let t = 0; t <= 10_000; t += 500) r.add(t, t < 5_000 ? 0 : (t - 5_000) / 10);
    // 50 per second over the last 5 s.
    expect(r.perSecond()).toBeCloseTo(100, 5);
  });

  it('starts over when the count goes down (a new reconcile)', () => {
    const r = new RateMeter(5_000);
    r.add(0, 0);
    r.add(1_000, 900);
    r.add(2_000, 10);
    r.add(3_000, 30);
    expect(r.perSecond()).toBe(20);
  });
});
