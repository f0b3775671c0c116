// Small statistics helpers: nearest-rank percentiles over plain arrays of numbers.

export interface Summary {
  n: number;
  mean: number | null;
  p50: number | null;
  /** Absent in results files from before it was kept. */
  p90?: number | null;
  p99: number | null;
  max: number | null;
  min: number | null;
}

/** Nearest-rank percentile of an ascending array (q in 0..1). */
export function percentile(sorted: ArrayLike<number>, q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

export function summarize(values: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(values).sort();
  if (sorted.length === 0) return { n: 0, mean: null, p50: null, p90: null, p99: null, max: null, min: null };
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    mean: sum / sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1]!,
    min: sorted[0]!,
  };
}

/** Rounds every number in a summary (for commit-friendly JSON). */
export function roundSummary(s: Summary, digits = 2): Summary {
  const r = (v: number | null) => (v === null ? null : round(v, digits));
  return { n: s.n, mean: r(s.mean), p50: r(s.p50), p90: r(s.p90 ?? null), p99: r(s.p99), max: r(s.max), min: r(s.min) };
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
