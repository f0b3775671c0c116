import { describe, expect, it } from 'vitest';
import { approachMessage, OrderedCeiling, type CeilingView } from '../../src/daemon/ceiling.js';

/** Samples every 500 ms of a lane kept `busy` (0..1) of the time at `writeMs` per write, the source at `source`/s. */
function feed(c: OrderedCeiling, from: { at: number; answered: number; busyMs: number; received: number }, seconds: number, writeMs: number, busy: number, source: number) {
  let s = { ...from };
  for (let i = 0; i < seconds * 2; i++) {
    const busyMs = 500 * busy;
    s = { at: s.at + 500, answered: s.answered + busyMs / writeMs, busyMs: s.busyMs + busyMs, received: s.received + source / 2 };
    c.add(s);
  }
  return s;
}

describe('OrderedCeiling', () => {
  it('measures the ceiling from busy time, whatever the load: a lane busy 10 % of the time at 14 ms per write says ~71/s', () => {
    const c = new OrderedCeiling();
    feed(c, { at: 0, answered: 0, busyMs: 0, received: 0 }, 20, 14, 0.1, 7);
    const v = c.view();
    expect(v.ceilingPerSecond).toBe(71);
    expect(v.writeMs).toBe(14);
    expect(v.sourcePerSecond).toBe(7);
    expect(v.approaching).toBe(false);
  });

  it('says nothing before enough writes were measured', () => {
    const c = new OrderedCeiling();
    feed(c, { at: 0, answered: 0, busyMs: 0, received: 0 }, 2, 14, 0.01, 1);
    expect(c.view().ceilingPerSecond).toBeNull();
  });

  it('tells of an episode once when the source approaches the ceiling, and once when it is well below again', () => {
    const episodes: [boolean, CeilingView][] = [];
    const c = new OrderedCeiling((approaching, v) => episodes.push([approaching, v]));
    let s = feed(c, { at: 0, answered: 0, busyMs: 0, received: 0 }, 20, 14, 0.3, 20);
    expect(episodes).toEqual([]);
    s = feed(c, s, 20, 14, 0.9, 65);
    s = feed(c, s, 20, 14, 0.85, 60);
    expect(episodes.map(([a]) => a)).toEqual([true]);
    expect(approachMessage(episodes[0]![1])).toMatch(/^strict order holds up to ~71 events\/s at the destination's current ~14 ms per write; the source writes ~\d+\/s \(v2 has no multi-key write/);
    feed(c, s, 20, 14, 0.2, 10);
    expect(episodes.map(([a]) => a)).toEqual([true, false]);
  });

  it('starts over when a new run restarts the counters', () => {
    const c = new OrderedCeiling();
    const s = feed(c, { at: 0, answered: 0, busyMs: 0, received: 0 }, 20, 10, 0.5, 30);
    c.add({ at: s.at + 500, answered: 0, busyMs: 0, received: 0 });
    expect(c.view().ceilingPerSecond).toBeNull();
  });
});
