// The source request budget and the request-cost monitor, on fake time.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SourceBudget, WINDOW_SAFE_EVENTS, EXPENSIVE_CATCH_UP_PARALLEL } from '../../src/replication/v2/source-budget.js';
import { RequestCost, type CostProbe } from '../../src/daemon/request-cost.js';
import { createMetrics } from '../../src/daemon/metrics.js';
import { createLogger } from '../../src/daemon/log.js';
import { Writable } from 'node:stream';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] });
});
afterEach(() => {
  vi.useRealTimers();
});

function budget(perSecond: number, expensive = true) {
  const counted: string[] = [];
  const exceeded: { rate: number; starts: boolean }[] = [];
  const b = new SourceBudget(perSecond, () => expensive, {
    counted: (p) => counted.push(p),
    exceeded: (rate, starts) => exceeded.push({ rate, starts }),
  }, (ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  return { b, counted, exceeded };
}

/** Runs `take` and reports when it resolved, in fake ms from now. */
async function timedTake(run: () => Promise<void>): Promise<number> {
  const at = performance.now();
  let done = -1;
  void run().then(() => (done = performance.now() - at));
  for (let i = 0; i < 100 && done < 0; i++) await vi.advanceTimersByTimeAsync(10);
  return done;
}

describe('SourceBudget', () => {
  it('spaces optional requests 1000/rate ms apart on an expensive source, shared by proofs and TTL re-reads', async () => {
    const { b, counted } = budget(5);
    const t0 = performance.now();
    const done: number[] = [];
    const takes = [b.take('proof'), b.take('ttl'), b.take('ttl'), b.take('proof', undefined, { storePerMs: 0.1, sinceLastMs: 0 })];
    takes.forEach((p) => void p.then(() => done.push(performance.now() - t0)));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(done).toEqual([0, 200, 400, 600]);
    expect(counted).toEqual(['proof', 'ttl', 'ttl', 'proof']);
    expect(b.catchUpParallel(64)).toBe(EXPENSIVE_CATCH_UP_PARALLEL);
  });

  it('holds nothing back on a cheap source or with a budget of 0', async () => {
    for (const { b } of [budget(5, false), budget(0, true)]) {
      for (let i = 0; i < 5; i++) expect(await timedTake(() => b.take('ttl'))).toBe(0);
      expect(b.catchUpParallel(64)).toBe(64);
      expect(b.view().active).toBe(false);
    }
  });

  it('lets a quiet proof go ahead above the budget when the store would pass WINDOW_SAFE_EVENTS meanwhile, and says so once per episode', async () => {
    const { b, exceeded } = budget(1);
    await timedTake(() => b.take('proof'));
    // 1 index/ms: WINDOW_SAFE_EVENTS ms after the last proof at the latest, not the 1000 ms the budget would ask.
    const waited = await timedTake(() => b.take('proof', undefined, { storePerMs: 1, sinceLastMs: 100 }));
    expect(waited).toBeGreaterThanOrEqual(WINDOW_SAFE_EVENTS - 100);
    expect(waited).toBeLessThan(WINDOW_SAFE_EVENTS - 100 + 20);
    await timedTake(() => b.take('proof', undefined, { storePerMs: 1, sinceLastMs: 0 }));
    expect(exceeded).toEqual([{ rate: 1000, starts: true }, { rate: 1000, starts: false }]);
    expect(b.view()).toMatchObject({ exceeded: true, storeIndexesPerSecond: 1000 });
    expect(b.view().message).toMatch(/^the source request budget \(1\/s\) would let the quiet prefix fall out/);
    await vi.advanceTimersByTimeAsync(31_000);
    expect(b.view()).toMatchObject({ exceeded: false, message: null });
  });
});

describe('RequestCost', () => {
  function monitor(side: 'source' | 'destination', auth: CostProbe['auth'], costMs: number, growthWindowMs?: number) {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const probe: CostProbe = { auth, user: 'mirror', sample: async () => ({ authenticatedMs: costMs + 1, baselineMs: 1 }) };
    const cost = new RequestCost(side, probe, createLogger({ destination: sink }), createMetrics({ url: 'http://x:1', prefix: '/p' }), 5, growthWindowMs);
    return { cost, lines };
  }

  it('measures, warns once at start when a password makes requests expensive, and names the user to give a certificate', async () => {
    const { cost, lines } = monitor('destination', 'password', 55);
    expect(cost.expensive).toBe(true); // assumed until measured
    cost.start();
    await vi.advanceTimersByTimeAsync(10);
    expect(cost.view()).toMatchObject({ auth: 'password', costMs: 55, ceilingPerSecond: 18, expensive: true, limiting: false });
    await vi.advanceTimersByTimeAsync(3 * 60_000); // measured again, not warned again
    cost.stop();
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings.map((l) => l.msg)).toEqual([
      'destination uses password auth: ~55 ms of server time per request (a bcrypt check), ceiling ~18 writes/s one at a time; a client certificate with CN=mirror lifts it',
    ]);
  });

  it('says nothing for certificates or cheap requests, and a growing lag is not blamed on them', async () => {
    for (const [auth, ms] of [['certificate', 0.2], ['password', 2], ['token', 0.5]] as const) {
      const { cost, lines } = monitor('destination', auth, ms);
      cost.start();
      await vi.advanceTimersByTimeAsync(10);
      for (let t = 0; t < 40; t++) cost.observeLag(performance.now() + t * 500, 100 + t * 50, 10, true);
      cost.stop();
      expect(cost.view()).toMatchObject({ expensive: false, limiting: false, message: null });
      expect(lines.filter((l) => l.level === 40)).toEqual([]);
    }
  });

  it('reports a lag that keeps growing under password auth once per episode, and its end', async () => {
    const { cost, lines } = monitor('destination', 'password', 60);
    cost.start();
    await vi.advanceTimersByTimeAsync(10);
    const t0 = performance.now();
    let t = 0;
    const step = (lag: number, tailing = true) => cost.observeLag(t0 + 500 * t++, lag, 15, tailing);
    for (let i = 0; i < 10; i++) step(50 + i * 20); // not yet 10 s of growth
    expect(cost.view().limiting).toBe(false);
    for (let i = 0; i < 20; i++) step(250 + i * 20);
    expect(cost.view().limiting).toBe(true);
    expect(cost.view().message).toMatch(/^lag growing: destination uses password auth/);
    for (let i = 0; i < 20; i++) step(700 + i * 20); // the same episode
    step(10); // caught up
    expect(cost.view().limiting).toBe(false);
    for (let i = 0; i < 30; i++) step(i * 30, false); // stalled, not tailing: not auth's fault
    cost.stop();
    const msgs = lines.filter((l) => l.side === 'destination').map((l) => String(l.msg));
    expect(msgs.filter((m) => m.startsWith('lag growing'))).toHaveLength(1);
    expect(msgs.filter((m) => m.startsWith('destination caught up'))).toHaveLength(1);
  });

  it('compares the lag over --lag-growth-ms when given', async () => {
    const { cost } = monitor('destination', 'password', 60, 2_000);
    cost.start();
    await vi.advanceTimersByTimeAsync(10);
    const t0 = performance.now();
    cost.observeLag(t0, 100, 15, true);
    cost.observeLag(t0 + 1_500, 150, 15, true); // not yet 90% of 2 s
    expect(cost.view().limiting).toBe(false);
    cost.observeLag(t0 + 2_000, 200, 15, true);
    expect(cost.view().limiting).toBe(true);
    cost.stop();
  });
});
