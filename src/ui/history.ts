// The page's copy of the daemon's history: fetched whole once, then only what is new every second (a few hundred
// bytes instead of the whole 15 minutes each time).
import { SERIES, type HistoryJson } from './wire.js';

/** The time to ask /history?after= for, or null to ask for everything. */
export const newestSample = (have: HistoryJson | null): number | null => have?.t.at(-1) ?? null;

/**
 * `have` brought up to date by `got`, the answer to /history?after=`after`: the samples up to `after` and the
 * bands that ended before it are kept (what the daemon no longer sends), then the answer's are appended; what is
 * older than the span is dropped. null when `got` is another daemon's history: start over with a whole one.
 */
export function mergeHistory(have: HistoryJson, got: HistoryJson, after: number): HistoryJson | null {
  if (got.startedAt !== have.startedAt) return null;
  const start = got.now - got.spanMs;
  const kept = have.t.map((t, i) => (t >= start && t <= after ? i : -1)).filter((i) => i >= 0);
  const series = Object.fromEntries(SERIES.map((s) => [s, [...kept.map((i) => have.series[s][i] ?? null), ...got.series[s]]])) as HistoryJson['series'];
  const bands = [...have.bands.filter((b) => b.to !== null && b.to < after && b.to >= start), ...got.bands];
  return { ...got, t: [...kept.map((i) => have.t[i]!), ...got.t], series, bands };
}
