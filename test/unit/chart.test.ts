// The pure parts of the /ui history charts: axis scales, time ticks, and where band labels go.
import { describe, expect, it } from 'vitest';
import { niceCeil, placeLabels, textWidth, timeTicks } from '../../src/ui/chart.js';

describe('niceCeil', () => {
  it('rounds up to 1, 2, 2.5 or 5 times a power of ten', () => {
    expect([0, 0.3, 1, 1.2, 3, 7, 10, 1205, 2200, 85].map(niceCeil)).toEqual([1, 0.5, 1, 2, 5, 10, 10, 2000, 2500, 100]);
  });
});

describe('timeTicks', () => {
  it('picks a round step that gives at most the wanted number of ticks', () => {
    const start = Date.UTC(2026, 11, 1, 12, 0, 7);
    expect(timeTicks(start, start + 15 * 60_000, 5)).toMatchObject({ seconds: false });
    expect(timeTicks(start, start + 15 * 60_000, 5).ticks.map((t) => (t - Date.UTC(2026, 11, 1, 12)) / 60_000)).toEqual([5, 10, 15]);
    const short = timeTicks(start, start + 60_000, 5);
    expect(short.seconds).toBe(true);
    expect(short.ticks.map((t) => (t - start) / 1000)).toEqual([8, 23, 38, 53]);
  });
});

describe('placeLabels', () => {
  const w = (s: string) => textWidth(s);

  it('puts a name inside its band when it fits', () => {
    expect(placeLabels([{ state: 'tailing', x0: 0, x1: 200 }], 0, 400)).toEqual([{ at: 'inside', x: 100 }]);
  });

  it('gives narrow bands a callout, moved aside or to the next row rather than overlapping', () => {
    // stalled, outOfWindow and recovering within a few pixels, then the current state.
    const bands = [
      { state: 'tailing', x0: 0, x1: 300 },
      { state: 'stalled', x0: 300, x1: 304 },
      { state: 'outOfWindow', x0: 304, x1: 306 },
      { state: 'recovering', x0: 306, x1: 309 },
      { state: 'tailing', x0: 309, x1: 400 },
    ];
    const places = placeLabels(bands, 0, 400);
    expect(places[0]).toMatchObject({ at: 'inside' });
    expect(places[4]).toMatchObject({ at: 'inside' });
    const callouts = places.slice(1, 4);
    expect(callouts.every((p) => p?.at === 'callout')).toBe(true);
    // No two callouts of one row overlap, and none leaves the plot.
    const boxes = callouts.map((p, i) => ({ row: (p as { row: number }).row, a: p!.x - w(bands[i + 1]!.state) / 2, z: p!.x + w(bands[i + 1]!.state) / 2 }));
    for (const b of boxes) expect(b.a >= 0 && b.z <= 400).toBe(true);
    for (const b of boxes) for (const c of boxes) if (b !== c && b.row === c.row) expect(b.z <= c.a || c.z <= b.a).toBe(true);
  });

  it('names a state retried over and over once per stretch', () => {
    // stalled, with a short retry between each: five stalled bands within 50 px.
    const bands = Array.from({ length: 9 }, (_, i) => ({ state: i % 2 ? 'tailing' : 'stalled', x0: 100 + 6 * i, x1: 106 + 6 * i }));
    bands.push({ state: 'tailing', x0: 154, x1: 400 });
    const places = placeLabels(bands, 0, 400);
    expect(places.filter((p, i) => p !== null && bands[i]!.state === 'stalled')).toHaveLength(1);
    expect(places.at(-1)).toMatchObject({ at: 'inside' });
  });

  it('serves the current state and trouble states before the others when room runs out', () => {
    const bands = Array.from({ length: 12 }, (_, i) => ({ state: i % 2 ? 'starting' : 'stalled', x0: 100 + i, x1: 101 + i }));
    bands.push({ state: 'recovering', x0: 112, x1: 113 });
    const places = placeLabels(bands, 0, 220);
    expect(places.at(-1)).toMatchObject({ at: 'callout' });
    expect(places.some((p, i) => p !== null && bands[i]!.state === 'stalled')).toBe(true);
    // Room for a few callouts only: the unimportant ones go without.
    expect(places.filter((p, i) => p !== null && bands[i]!.state === 'starting').length).toBeLessThan(6);
  });
});
