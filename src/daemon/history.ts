// The last 15 minutes of the mirror, kept in memory for GET /history and the charts on /ui. Samples go into a
// fixed ring of typed arrays (nothing allocated per sample, the same memory after 15 minutes as after 15 days);
// states are kept as intervals with their exact transition times, so a state held for 250 ms between two
// samples (outOfWindow) still shows.
import { SERIES, type BandJson, type HistoryJson, type SeriesName } from '../ui/wire.js';

export const HISTORY_SPAN_MS = 15 * 60_000;
export const HISTORY_SAMPLE_MS = 1_000;

export type Sample = Record<SeriesName, number | null>;

export class History {
  /** Samples held: enough for the whole span at the sampling pace, both ends included. */
  readonly capacity: number;
  readonly #t: Float64Array;
  /** NaN stands for null (unknown, or nothing to measure in that second). */
  readonly #values: Record<SeriesName, Float64Array>;
  /** Slot of the next sample; the oldest sample sits there once the ring is full. */
  #next = 0;
  #size = 0;
  readonly #bands: BandJson[] = [];
  readonly #maxBands: number;

  constructor(
    readonly spanMs = HISTORY_SPAN_MS,
    readonly sampleEveryMs = HISTORY_SAMPLE_MS,
    /** Tells one daemon's history from the next one's (a page that kept a copy starts over). */
    readonly startedAt = Date.now(),
  ) {
    this.capacity = Math.ceil(spanMs / sampleEveryMs) + 1;
    this.#t = new Float64Array(this.capacity);
    this.#values = Object.fromEntries(SERIES.map((s) => [s, new Float64Array(this.capacity)])) as Record<SeriesName, Float64Array>;
    // Room for a state change every half sample for the whole span (a stall retried as fast as the backoff
    // allows changes state twice per retry); beyond that the oldest bands go first.
    this.#maxBands = 2 * this.capacity;
  }

  record(t: number, sample: Sample): void {
    this.#t[this.#next] = t;
    // Three decimals (ms of a lag in seconds, µs of a latency in ms) are finer than anything measured here, and
    // keep the /history answer short.
    for (const s of SERIES) this.#values[s][this.#next] = sample[s] === null ? NaN : Math.round(sample[s] * 1000) / 1000;
    this.#next = (this.#next + 1) % this.capacity;
    this.#size = Math.min(this.#size + 1, this.capacity);
  }

  /** The machine entered `state` at `at` (ms since the epoch). */
  enter(state: string, at: number): void {
    const last = this.#bands.at(-1);
    if (last?.state === state) return;
    if (last) last.to = at;
    this.#bands.push({ state, from: at, to: null });
    // Bands that ended before the span are of no use any more.
    let expired = 0;
    while (expired < this.#bands.length - 1 && this.#bands[expired]!.to! < at - this.spanMs) expired++;
    this.#bands.splice(0, Math.max(expired, this.#bands.length - this.#maxBands));
  }

  /**
   * `after`: the time of the newest sample the asker holds. Then only later samples come, and the bands that
   * ended at or after it or are still open: the asker keeps its bands that ended before it and replaces the rest.
   */
  toJSON(now: number, after = -Infinity): HistoryJson {
    const start = now - this.spanMs;
    const t: number[] = [];
    const series = Object.fromEntries(SERIES.map((s) => [s, [] as (number | null)[]])) as Record<SeriesName, (number | null)[]>;
    const oldest = this.#size < this.capacity ? 0 : this.#next;
    for (let i = 0; i < this.#size; i++) {
      const slot = (oldest + i) % this.capacity;
      // A sampler held up (a blocked event loop) leaves older samples in the ring than the span.
      if (this.#t[slot]! < start || this.#t[slot]! <= after) continue;
      t.push(this.#t[slot]!);
      for (const s of SERIES) {
        const v = this.#values[s][slot]!;
        series[s].push(Number.isNaN(v) ? null : v);
      }
    }
    const bands = this.#bands.filter((b) => b.to === null || b.to >= Math.max(start, after)).map((b) => ({ ...b }));
    return { now, startedAt: this.startedAt, spanMs: this.spanMs, sampleEveryMs: this.sampleEveryMs, t, series, bands };
  }
}

/** Cumulative bucket counts of a histogram: upper bound (Infinity for +Inf) → observations at or below it. */
export type Buckets = ReadonlyMap<number, number>;

/** The `_bucket` values of a prom-client histogram's get(), summed over label sets. */
export function bucketsOf(values: readonly { labels: Partial<Record<string, string | number>>; value: number; metricName?: string }[]): Buckets {
  const buckets = new Map<number, number>();
  for (const v of values) {
    if (!v.metricName?.endsWith('_bucket') || v.labels.le === undefined) continue;
    const le = v.labels.le === '+Inf' ? Infinity : Number(v.labels.le);
    buckets.set(le, (buckets.get(le) ?? 0) + v.value);
  }
  return buckets;
}

/**
 * A quantile of the observations made between two readings of a cumulative histogram, interpolated linearly
 * inside its bucket as Prometheus' histogram_quantile does: an estimate within the bucket's bounds.
 */
export class IntervalQuantile {
  #previous: Buckets = new Map();

  constructor(readonly q: number) {}

  /** null when nothing was observed since the previous reading. */
  next(current: Buckets): number | null {
    const bounds = [...current.keys()].sort((a, b) => a - b);
    const delta = bounds.map((le) => (current.get(le) ?? 0) - (this.#previous.get(le) ?? 0));
    this.#previous = current;
    const total = delta.at(-1) ?? 0;
    if (total <= 0) return null;
    const rank = this.q * total;
    const i = delta.findIndex((n) => n >= rank);
    const upper = bounds[i]!;
    const lower = i > 0 ? bounds[i - 1]! : 0;
    // Above the last finite bound nothing is known but that bound.
    if (upper === Infinity) return lower;
    const below = i > 0 ? delta[i - 1]! : 0;
    return lower + ((upper - lower) * (rank - below)) / (delta[i]! - below);
  }
}
