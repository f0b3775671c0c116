// The poller's pure parts on a hand clock: the header-to-body gap measure (body-gaps.ts) and the claim
// bookkeeping (sequencer.ts). The poller's own tests (poller.test.ts) cover them through the I/O.
import { describe, expect, it } from 'vitest';
import type { EtcdEvent } from '../../src/etcd/v2/decode.js';
import { ResyncNeededError } from '../../src/etcd/errors.js';
import { BodyGaps, SILENCE_MS } from '../../src/replication/v2/body-gaps.js';
import { Sequencer } from '../../src/replication/v2/sequencer.js';

const handClock = (t = 1_000) => ({ now: () => t, set: (ms: number) => (t = ms), add: (ms: number) => (t += ms) });
const ev = (index: number): EtcdEvent => ({ action: 'set', node: { key: `/demo/k${index}`, value: 'v', modifiedIndex: index, createdIndex: index } });

function sequencer(start = 100) {
  const clock = handClock();
  const gaps = new BodyGaps(clock);
  const out = { events: [] as number[], quiets: [] as number[], confirmed: [] as number[], polls: 0 };
  const seq = new Sequencer(start, {
    event: (e) => out.events.push(e.node.modifiedIndex),
    quiet: (i) => out.quiets.push(i),
    confirmed: (i) => out.confirmed.push(i),
    poll: () => out.polls++,
  }, gaps, clock);
  return { clock, gaps, out, seq };
}

describe('BodyGaps', () => {
  it('follows the largest recent gap, within bounds, and forgets it after a minute', () => {
    const clock = handClock();
    const gaps = new BodyGaps(clock);
    expect(gaps.silenceMs()).toBe(SILENCE_MS);
    expect(gaps.confirmMs()).toBe(100);
    gaps.record(1); // bytes together: no lesson
    expect(gaps.maxMs()).toBe(0);
    gaps.record(25);
    expect(gaps.silenceMs()).toBe(50);
    expect(gaps.confirmMs()).toBe(200);
    gaps.record(1_000);
    expect(gaps.silenceMs()).toBe(250); // capped
    expect(gaps.confirmMs()).toBe(2_000); // capped
    expect(gaps.confirmMs(1)).toBe(500); // 120 store indexes at 1/ms, but never under twice the silence
    clock.add(60_001);
    expect(gaps.maxMs()).toBe(0);
    expect(gaps.silenceMs()).toBe(SILENCE_MS);
  });
});

describe('Sequencer', () => {
  it('confirms a claim only after confirmMs of the clock on a live connection', () => {
    const { clock, out, seq } = sequencer();
    seq.claim(101, 110);
    expect(out.quiets).toEqual([110]);
    clock.add(99);
    seq.tick();
    expect(out.confirmed).toEqual([]);
    clock.add(1);
    seq.tick();
    expect(out.confirmed).toEqual([110]);
  });

  it('a lost connection holds confirmation until a re-verification, which restarts the wait', () => {
    const { clock, out, seq } = sequencer();
    seq.claim(101, 110);
    seq.connectionLost();
    clock.add(500);
    seq.tick();
    expect(out.confirmed).toEqual([]);
    expect(seq.unverified()).toEqual({ from: 101, to: 110 });
    seq.reverified(110);
    expect(seq.unverified()).toBeNull();
    clock.add(99);
    seq.tick();
    expect(out.confirmed).toEqual([]);
    clock.add(1);
    seq.tick();
    expect(out.confirmed).toEqual([110]);
  });

  it('an event from a channel covering the claim confirms it at once; a duplicate is dropped', () => {
    const { out, seq } = sequencer();
    seq.claim(101, 110);
    seq.release(ev(111), 100);
    expect(out.events).toEqual([111]);
    expect(out.confirmed).toEqual([111]);
    seq.release(ev(111), 100);
    expect(out.events).toEqual([111]);
  });

  it('an event inside a claim fails with the claim named, teaches the gaps how late it was, and stops confirmation', async () => {
    const { clock, gaps, out, seq } = sequencer();
    const failed = seq.failed();
    seq.claim(101, 110);
    clock.add(40);
    seq.check(105);
    await expect(failed).rejects.toBeInstanceOf(ResyncNeededError);
    expect(seq.failure?.claimFrom).toBe(101);
    expect(gaps.maxMs()).toBe(40 + SILENCE_MS); // at least that late
    clock.add(10_000);
    seq.tick();
    expect(out.confirmed).toEqual([]);
  });
});
