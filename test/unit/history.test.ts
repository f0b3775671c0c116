// The /history ring: fixed capacity, wrap-around, state bands with exact transition times, the JSON shape; the p99
// of destination writes per sample from the latency histogram; and what 15 minutes of it cost in memory.
// Time is passed in, never read from a clock: every test runs on made-up timestamps.
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { bucketsOf, History, HISTORY_SAMPLE_MS, HISTORY_SPAN_MS, IntervalQuantile, type Sample } from '../../src/daemon/history.js';
import { mergeHistory, newestSample } from '../../src/ui/history.js';
import type { HistoryJson } from '../../src/ui/wire.js';

const T0 = Date.UTC(2026, 11, 1, 12, 0, 0);
const sample = (i: number): Sample => ({
  lagEvents: i,
  lagSeconds: i / 10,
  headroomEvents: 1000 - i,
  eventsPerSecond: 2 * i,
  writeP99Ms: i % 3 === 0 ? null : i / 100,
});

describe('History samples', () => {
  it('keeps the last span of samples, oldest first, once the ring has wrapped around', () => {
    const h = new History(10_000, 1_000);
    expect(h.capacity).toBe(11);
    for (let i = 0; i < 25; i++) h.record(T0 + i * 1_000, sample(i));
    const j = h.toJSON(T0 + 24_000);
    const kept = Array.from({ length: 11 }, (_, k) => 14 + k);
    expect(j.t).toEqual(kept.map((i) => T0 + i * 1_000));
    expect(j.series.lagEvents).toEqual(kept);
    expect(j.series.headroomEvents).toEqual(kept.map((i) => 1000 - i));
    expect(j.series.writeP99Ms).toEqual(kept.map((i) => (i % 3 === 0 ? null : i / 100)));
  });

  it('before the ring is full, holds what it has', () => {
    const h = new History(10_000, 1_000);
    expect(h.toJSON(T0).t).toEqual([]);
    for (let i = 0; i < 3; i++) h.record(T0 + i * 1_000, sample(i));
    expect(h.toJSON(T0 + 2_000).series.eventsPerSecond).toEqual([0, 2, 4]);
  });

  it('leaves out samples older than the span (a sampler that was held up)', () => {
    const h = new History(10_000, 1_000);
    h.record(T0, sample(1));
    h.record(T0 + 30_000, sample(2));
    expect(h.toJSON(T0 + 31_000).series.lagEvents).toEqual([2]);
  });
});

describe('History bands', () => {
  it('records states as intervals with their exact times; a band that began before the span keeps its start', () => {
    const h = new History(10_000, 1_000);
    h.enter('idle', T0);
    h.enter('starting', T0 + 5);
    h.enter('tailing', T0 + 120);
    h.enter('tailing', T0 + 900); // no change: no new band
    h.enter('stalled', T0 + 4_321);
    h.enter('outOfWindow', T0 + 20_000);
    h.enter('recovering', T0 + 20_250);
    const j = h.toJSON(T0 + 26_000);
    // The span starts at T0 + 16 s: what ended before it is gone, stalled spans the start.
    expect(j.bands).toEqual([
      { state: 'stalled', from: T0 + 4_321, to: T0 + 20_000 },
      { state: 'outOfWindow', from: T0 + 20_000, to: T0 + 20_250 },
      { state: 'recovering', from: T0 + 20_250, to: null },
    ]);
  });

  it('keeps the current state however long ago it began', () => {
    const h = new History(10_000, 1_000);
    h.enter('tailing', T0);
    expect(h.toJSON(T0 + 3_600_000).bands).toEqual([{ state: 'tailing', from: T0, to: null }]);
  });

  it('holds a bounded number of bands when the state flaps faster than it samples', () => {
    const h = new History(10_000, 1_000);
    for (let i = 0; i < 1_000; i++) h.enter(i % 2 ? 'stalled' : 'tailing', T0 + i);
    const bands = h.toJSON(T0 + 1_000).bands;
    expect(bands).toHaveLength(2 * h.capacity);
    expect(bands.at(-1)).toEqual({ state: 'stalled', from: T0 + 999, to: null });
    // Still a chain: each band ends where the next begins.
    for (let i = 1; i < bands.length; i++) expect(bands[i - 1]!.to).toBe(bands[i]!.from);
  });

  it('answers copies: a later transition does not change an answer already given', () => {
    const h = new History(10_000, 1_000);
    h.enter('tailing', T0);
    const j = h.toJSON(T0 + 1);
    h.enter('stalled', T0 + 2);
    expect(j.bands).toEqual([{ state: 'tailing', from: T0, to: null }]);
  });
});

describe('GET /history JSON', () => {
  it('has the documented shape, and survives JSON (null for unknown values, never NaN)', () => {
    const h = new History(undefined, undefined, T0 - 5);
    expect(h.spanMs).toBe(15 * 60_000);
    expect(h.capacity).toBe(HISTORY_SPAN_MS / HISTORY_SAMPLE_MS + 1);
    h.enter('tailing', T0);
    h.record(T0 + 1_000, { lagEvents: null, lagSeconds: 0, headroomEvents: null, eventsPerSecond: 0, writeP99Ms: null });
    h.record(T0 + 2_000, sample(4));
    const j = JSON.parse(JSON.stringify(h.toJSON(T0 + 2_500))) as unknown;
    expect(j).toEqual({
      now: T0 + 2_500,
      startedAt: T0 - 5,
      spanMs: 900_000,
      sampleEveryMs: 1_000,
      t: [T0 + 1_000, T0 + 2_000],
      series: {
        lagEvents: [null, 4],
        lagSeconds: [0, 0.4],
        headroomEvents: [null, 996],
        eventsPerSecond: [0, 8],
        writeP99Ms: [null, 0.04],
      },
      bands: [{ state: 'tailing', from: T0, to: null }],
    });
  });
});

describe('GET /history?after=T and the page\'s copy', () => {
  it('sends only later samples, and the bands that ended at or after T or are open', () => {
    const h = new History(10_000, 1_000, T0);
    h.enter('tailing', T0);
    for (let i = 1; i <= 3; i++) h.record(T0 + i * 1_000, sample(i));
    h.enter('stalled', T0 + 2_500);
    const j = h.toJSON(T0 + 3_100, T0 + 2_000);
    expect(j.t).toEqual([T0 + 3_000]);
    expect(j.bands).toEqual([
      { state: 'tailing', from: T0, to: T0 + 2_500 },
      { state: 'stalled', from: T0 + 2_500, to: null },
    ]);
  });

  it('kept up to date by what is new, the page holds what a whole answer would say', () => {
    // A stall retried every few seconds, states changing between, at and right after samples; the page asks
    // every second, sometimes twice, and misses some seconds; the ring wraps around.
    const h = new History(20_000, 1_000, T0);
    let page: HistoryJson | null = null;
    const ask = (now: number) => {
      const after = newestSample(page);
      const got = h.toJSON(now, after ?? undefined);
      page = page && after !== null ? mergeHistory(page, got, after) : got;
      expect(page).toEqual(h.toJSON(now));
    };
    h.enter('idle', T0);
    ask(T0 + 10);
    for (let i = 1; i <= 60; i++) {
      const t = T0 + i * 1_000;
      if (i % 7 === 0) h.enter('stalled', t);
      if (i % 7 === 2) h.enter('tailing', t - 300);
      if (i % 11 === 0) h.enter('recovering', t + 1);
      h.record(t, sample(i));
      if (i % 5 !== 0) ask(t);
      if (i % 3 === 0) ask(t + 400);
    }
  });

  it('starts over with another daemon\'s history', () => {
    const a = new History(10_000, 1_000, T0);
    a.record(T0 + 1_000, sample(1));
    const b = new History(10_000, 1_000, T0 + 5_000);
    expect(mergeHistory(a.toJSON(T0 + 1_500), b.toJSON(T0 + 6_000, T0 + 1_000), T0 + 1_000)).toBeNull();
  });
});

describe('IntervalQuantile', () => {
  const buckets = (counts: [number, number][]) => new Map(counts);

  it('interpolates the p99 inside its bucket, per interval between readings', () => {
    const q = new IntervalQuantile(0.99);
    // 98 writes ≤ 1 ms, 2 between 1 and 2.5 ms: rank 99 is halfway into the (1, 2.5] bucket.
    expect(q.next(buckets([[0.001, 98], [0.0025, 100], [Infinity, 100]]))).toBeCloseTo(0.00175, 9);
    // No write since: nothing to measure.
    expect(q.next(buckets([[0.001, 98], [0.0025, 100], [Infinity, 100]]))).toBeNull();
    // Only the writes of this interval count: 10 more, all ≤ 1 ms.
    expect(q.next(buckets([[0.001, 108], [0.0025, 110], [Infinity, 110]]))).toBeCloseTo(0.00099, 9);
  });

  it('says the last finite bound when the quantile is beyond it', () => {
    const q = new IntervalQuantile(0.99);
    expect(q.next(buckets([[0.5, 1], [2.5, 1], [Infinity, 10]]))).toBe(2.5);
  });

  it('reads a prom-client histogram', async () => {
    const registry = new Registry();
    const h = new Histogram({ name: 't_latency', help: 'x', labelNames: ['url'] as const, buckets: [0.001, 0.01], registers: [registry] });
    for (let i = 0; i < 99; i++) h.labels({ url: 'a' }).observe(0.0005);
    h.labels({ url: 'a' }).observe(0.005);
    const got = bucketsOf((await h.get()).values);
    expect([...got]).toEqual([
      [0.001, 99],
      [0.01, 100],
      [Infinity, 100],
    ]);
    expect(new IntervalQuantile(0.99).next(got)).toBeCloseTo(0.001, 9);
  });
});

describe('memory', () => {
  it('15 minutes of samples and a band per half second cost well under 10 MB', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const before = process.memoryUsage();
    const h = new History();
    const start = T0;
    for (let i = 0; i < h.capacity; i++) {
      h.record(start + i * HISTORY_SAMPLE_MS, sample(i));
      h.enter('stalled', start + i * HISTORY_SAMPLE_MS);
      h.enter('tailing', start + i * HISTORY_SAMPLE_MS + 500);
    }
    const json = JSON.stringify(h.toJSON(start + h.capacity * HISTORY_SAMPLE_MS));
    gc();
    const after = process.memoryUsage();
    const heldBytes = after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers);
    console.log(
      `history: ${h.capacity} samples, ${2 * h.capacity} bands: held ${(heldBytes / 1024).toFixed(0)} KiB (heap + array buffers, ` +
        `with one /history answer of ${(json.length / 1024).toFixed(0)} KiB)`,
    );
    expect(heldBytes).toBeLessThan(10 * 1024 * 1024);
    expect(h.toJSON(start + h.capacity * HISTORY_SAMPLE_MS).bands.length).toBeLessThanOrEqual(2 * h.capacity);
  });
});
