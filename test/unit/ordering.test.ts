import { describe, expect, it } from 'vitest';
import { describeChange, OrderingPolicy, type OrderingChange } from '../../src/replication/v2/ordering.js';

/** A runner on a simulated clock: the source grows at `source(t)` events/s, the writer applies at `strict` or `key`
 * events/s (whichever the policy says, never past the source), the stored index follows the applied one every
 * checkpoint interval, and the policy is fed every `stepMs` as the runner feeds it on each source index it sees. */
function simulate(opts: {
  seconds: number;
  source: (t: number) => number;
  strict: number;
  key: number;
  /** The backlog already waiting at the start (a restart's). */
  backlog?: number;
  checkpointMs?: number;
  stepMs?: number;
  /** false: the events reach the writer only as it applies them (the poller is what is slow). */
  fetched?: boolean;
}) {
  const { strict, key, checkpointMs = 100, stepMs = 5 } = opts;
  let t = 0;
  const changes: OrderingChange[] = [];
  const changedAt: number[] = [];
  const p = new OrderingPolicy('adaptive', (c) => {
    changes.push(c);
    changedAt.push(t);
  }, () => t);
  let source = opts.backlog ?? 0;
  let applied = 0;
  let stored = 0;
  let minHeadroom = 1000 - source;
  for (; t <= opts.seconds * 1000; t += stepMs) {
    source += (opts.source(t) * stepMs) / 1000;
    const rate = p.writerOrdering === 'strict' ? strict : key;
    applied = Math.min(source, applied + (rate * stepMs) / 1000);
    if (t % checkpointMs === 0) stored = Math.floor(applied);
    minHeadroom = Math.min(minHeadroom, 1000 - (Math.floor(source) - stored));
    p.sample({ source: Math.floor(source), applied: Math.floor(applied), stored, waiting: opts.fetched === false ? 0 : Math.floor(source) - Math.floor(applied) });
  }
  return { changes, changedAt, minHeadroom, policy: p };
}

describe('OrderingPolicy', () => {
  it('strict and key never change', () => {
    const strict = new OrderingPolicy('strict');
    const key = new OrderingPolicy('key');
    for (const s of [{ source: 100, applied: 0, stored: 0, waiting: 100 }, { source: 2000, applied: 10, stored: 0, waiting: 1990 }]) {
      expect(strict.sample(s)).toBe(false);
      expect(key.sample(s)).toBe(false);
    }
    expect(strict.writerOrdering).toBe('strict');
    expect(key.writerOrdering).toBe('key');
  });

  it('a restart backlog that source order drains: the headroom dips near the edge, and order is kept', () => {
    // The measured case: ~780 events waiting (headroom ~220), the source at 1,200/s, the ordered writer faster.
    const r = simulate({ seconds: 5, source: () => 1200, strict: 2800, key: 6000, backlog: 780 });
    expect(r.minHeadroom).toBeLessThan(250); // a fixed 250-event threshold reordered here
    expect(r.changes).toEqual([]);
    expect(r.policy.reorderingMs()).toBe(0);
  });

  it('keeps order while the ordered writer only just keeps up, even with little headroom', () => {
    const r = simulate({ seconds: 10, source: () => 1200, strict: 1300, key: 6000, backlog: 820 });
    expect(r.minHeadroom).toBeLessThan(200);
    expect(r.changes).toEqual([]);
  });

  it('keeps order while the source and the ordered writer are level near the floor, bursts and all', () => {
    // The source writes in bursts (as a poll delivers them), on average at the ordered writer's rate: the lag
    // stays ~700 events (the stored index's headroom below the 200-event floor before each checkpoint), the trend
    // a few events/s either way.
    const r = simulate({ seconds: 20, source: (t) => (t % 50 < 10 ? 6000 : 0), strict: 1200, key: 6000, backlog: 700 });
    expect(r.minHeadroom).toBeLessThan(200);
    expect(r.changes).toEqual([]);
  });

  it('a source that stays faster than the ordered writer: overlaps before the window is lost, naming the trend', () => {
    const r = simulate({ seconds: 10, source: () => 2000, strict: 1675, key: 4000 });
    // Source order could not hold the window for long at this pace: once overlapping, it stays so (no flapping).
    expect(r.changes).toHaveLength(1);
    const [first] = r.changes;
    expect(first).toMatchObject({ reordering: true, trigger: 'trend', sourcePerSecond: 2000, drainPerSecond: 1675 });
    expect(first!.secondsToLoss).toBeGreaterThan(0);
    expect(r.minHeadroom).toBeGreaterThanOrEqual(200);
    expect(describeChange(first!)).toMatch(
      /^window headroom low: \d+ events, falling 325\/s \(source 2,000\/s, ordered writer 1,675\/s\), ~\d+\.\d s to the window's end; writes to unrelated keys may overlap/,
    );
  });

  it('a sudden burst far above the ordered writer: the window is kept', () => {
    const r = simulate({ seconds: 4, source: (t) => (t < 1000 ? 800 : 3000), strict: 1700, key: 5000 });
    expect(r.changes[0]).toMatchObject({ reordering: true, trigger: 'trend' });
    expect(r.minHeadroom).toBeGreaterThan(0);
  });

  it('returns to source order once the source slows below the ordered writer, with the headroom back', () => {
    const r = simulate({ seconds: 6, source: (t) => (t < 2000 ? 2500 : 600), strict: 1700, key: 5000 });
    expect(r.changes.map((c) => [c.reordering, c.trigger])).toEqual([
      [true, 'trend'],
      [false, 'recovered'],
    ]);
    expect(r.changedAt[1]).toBeGreaterThan(2000);
    expect(r.policy.writerOrdering).toBe('strict');
    expect(r.policy.reorderingMs()).toBe(r.changedAt[1]! - r.changedAt[0]!);
    // Restored as the source slowed: source order, at the ordered writer's rate, keeps the window for a while.
    expect(describeChange(r.changes[1]!)).toMatch(
      /^window headroom restored: \d+ events \(source [\d,]+\/s, ordered writer 1,700\/s(: ~\d+\.\d s to the window's end in source order)?\); writes follow source order again$/,
    );
  });

  it('does not flap while the source stays a little faster than the ordered writer, bursts and all', () => {
    // The source writes in bursts every 50 ms (as a poll delivers them), on average 1,800/s against 1,675/s.
    const r = simulate({ seconds: 30, source: (t) => (t % 50 < 10 ? 9000 : 0), strict: 1675, key: 4000 });
    // Source order as long as it keeps the window, a short overlap when it would not: each stretch in source
    // order lasts well over the decision's bound (the hysteresis), and the window is never lost.
    expect(r.changes.length).toBeGreaterThan(2);
    const strictStretches = r.changedAt.slice(1).map((at, i) => at - r.changedAt[i]!).filter((_, i) => i % 2 === 1);
    expect(Math.min(...strictStretches)).toBeGreaterThanOrEqual(1500);
    expect(r.minHeadroom).toBeGreaterThan(0);
  });

  it('with no trend measured yet, only a critically low headroom that is not recovering overlaps writes', () => {
    let t = 0;
    const changes: OrderingChange[] = [];
    const gaining = new OrderingPolicy('adaptive', (c) => changes.push(c), () => t);
    expect(gaining.sample({ source: 1000, applied: 150, stored: 150, waiting: 850 })).toBe(false); // headroom 150
    t = 20;
    expect(gaining.sample({ source: 1020, applied: 250, stored: 150, waiting: 770 })).toBe(false); // 130
    t = 40;
    expect(gaining.sample({ source: 1040, applied: 350, stored: 150, waiting: 690 })).toBe(false); // 110
    t = 60;
    expect(gaining.sample({ source: 1070, applied: 450, stored: 150, waiting: 620 })).toBe(false); // 80, but gaining fast
    expect(changes).toEqual([]);

    t = 0;
    const stuck = new OrderingPolicy('adaptive', (c) => changes.push(c), () => t);
    expect(stuck.sample({ source: 1000, applied: 100, stored: 100, waiting: 900 })).toBe(false);
    t = 20;
    expect(stuck.sample({ source: 1030, applied: 100, stored: 100, waiting: 930 })).toBe(true); // 70, not gaining
    expect(changes[0]).toMatchObject({ reordering: true, trigger: 'floor', headroomEvents: 70, sourcePerSecond: null });
    expect(describeChange(changes[0]!)).toMatch(/^window headroom low: 70 events and not recovering, before a trend was measured; writes to unrelated keys/);
  });

  it('no overlap while the writer waits for the source\'s events (the poller is slow, not the ordered writer)', () => {
    const r = simulate({ seconds: 3, source: () => 2000, strict: 1675, key: 4000, fetched: false });
    expect(r.minHeadroom).toBeLessThanOrEqual(0);
    expect(r.changes).toEqual([]);
  });
});
