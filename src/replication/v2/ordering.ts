// Which order destination writes follow, decided per --ordering. 'adaptive' keeps source order unless the trend
// says source order would let the stored index fall out of etcd's history window: losing the window forces a
// snapshot reconcile, which reorders far more than letting writes to unrelated keys overlap for a while. A low
// headroom alone is no reason: after a restart the backlog starts near the window's end, and the ordered writer
// usually drains it faster than the source writes (a fixed threshold gave up order there for nothing).
import type { Ordering } from '../ports.js';
import { windowHeadroom } from '../window.js';
import type { WriteOrdering } from './order.js';

/** Rates are the least-squares slopes of the samples of this much recent time: one step of the applied index
 * (a batch of writes) or of the stored index (a checkpoint, 100 ms by default) does not make a trend. */
export const TREND_WINDOW_MS = 400;
/** A trend is judged only once the samples span this long. */
const MIN_TREND_SPAN_MS = 150;
/** Samples closer together are merged, and judged once (the poller may report the source index once per event). */
const SAMPLE_SPACING_MS = 10;
/** From the decision to overlapping writes: the next sample and the ordered lane's writes in flight. */
const REACTION_MS = 100;
/**
 * Reorder when the projected time until the headroom reaches the floor is below this. The projection is linear in
 * rates estimated over TREND_WINDOW_MS, so a change of rate is seen fully only one window late; overlapping writes
 * then start within REACTION_MS. Deciding this long ahead, the faster writer takes over before the floor is
 * reached. The checkpoint interval is not in the bound: the projection counts the stored index's trail behind the
 * applied one as lost headroom.
 */
const TIME_TO_LOSS_BOUND_MS = TREND_WINDOW_MS + REACTION_MS;
/** Headroom the projection keeps in reserve: /readyz's minimum for a restart or a short outage, and a margin for a
 * rate that rises within the window (the linear projection cannot see it). */
const HEADROOM_FLOOR = 200;
/** No trend yet (the first samples after a start or a replay): headroom this low, and the applied index not
 * gaining on the source, is reason enough. */
const CRITICAL_HEADROOM = 100;
/** Fewer events than this waiting in the writer (what overlapping writes could start at once by default): the
 * writer waits for the source's events, not the reverse, and overlapping writes would not drain it any faster. */
const MIN_WAITING = 16;
/** Back to source order only with this much headroom (hysteresis on the level; on the trend: HORIZON_MS). */
export const STRICT_ABOVE_HEADROOM = 500;
/** A trend of TREND_WINDOW_MS says little about seconds later: a loss projected further out is not acted on (a
 * headroom that sits near the floor while the source and the ordered writer are level shows a trend of a few
 * events/s either way). Back to source order only when, at the rate the ordered writer had, it would keep the
 * headroom above the floor at least this long (hysteresis on the trend: no flapping while the source stays a
 * little faster than the ordered writer). */
const HORIZON_MS = 4 * TIME_TO_LOSS_BOUND_MS;

/** One observation of the runner's indexes. */
export interface OrderingSample {
  /** The source's store index, as last seen. */
  source: number;
  /** Highest index below which everything is applied. */
  applied: number;
  /** The stored replication index (what a restart resumes from). */
  stored: number;
  /** Events handed to the writer and not yet applied. */
  waiting: number;
}

export interface OrderingChange {
  reordering: boolean;
  /** 'trend': the headroom falls and would reach the floor within the bound; 'floor': critically low before a
   * trend was measured; 'recovered': back to source order. */
  trigger: 'trend' | 'floor' | 'recovered';
  /** The stored index's window headroom. */
  headroomEvents: number;
  /** Rates of the source's store index and of the applied index under source order, the ones the decision used
   * (null: not measured). */
  sourcePerSecond: number | null;
  drainPerSecond: number | null;
  /** Projected time until the stored index leaves the window at these rates, in the ordering now chosen
   * (null: not falling). */
  secondsToLoss: number | null;
}

interface Timed extends OrderingSample {
  t: number;
}

interface Trend {
  sourcePerSecond: number;
  drainPerSecond: number;
}

/** Least-squares slope of `y` over the samples' time, per second. */
function slope(samples: readonly Timed[], y: (s: Timed) => number): number {
  const n = samples.length;
  const mt = samples.reduce((a, s) => a + s.t, 0) / n;
  const my = samples.reduce((a, s) => a + y(s), 0) / n;
  let num = 0;
  let den = 0;
  for (const s of samples) {
    num += (s.t - mt) * (y(s) - my);
    den += (s.t - mt) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 1000;
}

const round = (n: number | null) => (n === null ? null : Math.round(n));

/** Lives as long as the process (across runner restarts), so entering and leaving is reported once each. */
export class OrderingPolicy {
  #reordering: boolean;
  #since: number | null;
  #totalMs = 0;
  #samples: Timed[] = [];
  /** The ordered writer's rate when overlapping began (null: entered before a trend was measured). */
  #strictRate: number | null = null;
  #judgedAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly mode: Ordering,
    private readonly onChange: (change: OrderingChange) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {
    this.#reordering = mode === 'key';
    this.#since = this.#reordering ? now() : null;
  }

  /** True while writes to unrelated keys may overlap. */
  get reordering(): boolean {
    return this.#reordering;
  }

  get writerOrdering(): WriteOrdering {
    return this.#reordering ? 'key' : 'strict';
  }

  /** Milliseconds spent reordering so far, the current stretch included. */
  reorderingMs(): number {
    return this.#totalMs + (this.#since === null ? 0 : this.now() - this.#since);
  }

  /** Feeds the runner's indexes (only while its writer runs); returns true when the ordering changed. */
  sample(sample: OrderingSample): boolean {
    if (this.mode !== 'adaptive') return false;
    const t = this.now();
    this.#record({ ...sample, t });
    // Judged at most once per sample spacing: the runner may feed a sample per source event.
    if (t - this.#judgedAt < SAMPLE_SPACING_MS) return false;
    this.#judgedAt = t;
    const headroom = windowHeadroom(Math.max(0, sample.source - sample.stored))!;
    const trend = this.#trend();
    // Lost headroom counts the stored index's trail behind the applied one (it is stored every checkpoint
    // interval): the largest trail of the window.
    const trail = Math.max(0, ...this.#samples.map((s) => s.applied - s.stored));
    const effective = Math.min(headroom, windowHeadroom(Math.max(0, sample.source - sample.applied))! - trail);
    const toLoss = (falling: number) => (falling > 0 ? Math.max(0, effective) / falling : null);
    const change = (reordering: boolean, trigger: OrderingChange['trigger'], secondsToLoss: number | null): OrderingChange => ({
      reordering,
      trigger,
      headroomEvents: headroom,
      sourcePerSecond: trend ? Math.round(trend.sourcePerSecond) : null,
      drainPerSecond: round(reordering ? (trend?.drainPerSecond ?? null) : this.#strictRate),
      secondsToLoss: secondsToLoss === null ? null : Math.round(secondsToLoss * 100) / 100,
    });

    if (!this.#reordering) {
      if (sample.waiting < MIN_WAITING) return false;
      if (trend) {
        const falling = trend.sourcePerSecond - trend.drainPerSecond;
        if (falling <= 0 || (effective - HEADROOM_FLOOR) / falling >= TIME_TO_LOSS_BOUND_MS / 1000 || effective / falling >= HORIZON_MS / 1000) return false;
        this.#strictRate = trend.drainPerSecond;
        return this.#switch(change(true, 'trend', toLoss(falling)));
      }
      if (headroom >= CRITICAL_HEADROOM || this.#gaining()) return false;
      this.#strictRate = null;
      return this.#switch(change(true, 'floor', null));
    }
    if (!trend || headroom < STRICT_ABOVE_HEADROOM) return false;
    // Judged at the rate the ordered writer had: the rate measured now is the overlapping writer's.
    const strictFalling = this.#strictRate === null ? 0 : trend.sourcePerSecond - this.#strictRate;
    if (strictFalling > 0 && (effective - HEADROOM_FLOOR) / strictFalling < HORIZON_MS / 1000) return false;
    return this.#switch(change(false, 'recovered', toLoss(strictFalling)));
  }

  #record(s: Timed): void {
    const last = this.#samples.at(-1);
    // A new runner (a reload starts over, lower) or a gap longer than the window: earlier samples say nothing.
    if (last && (s.applied < last.applied || s.source < last.source || s.t - last.t > TREND_WINDOW_MS)) this.#samples = [];
    const prev = this.#samples.at(-2);
    if (prev && s.t - prev.t < SAMPLE_SPACING_MS) this.#samples[this.#samples.length - 1] = s;
    else this.#samples.push(s);
    while (this.#samples.length > 2 && s.t - this.#samples[0]!.t > TREND_WINDOW_MS) this.#samples.shift();
  }

  #trend(): Trend | null {
    const first = this.#samples[0]!;
    const last = this.#samples.at(-1)!;
    if (last.t - first.t < MIN_TREND_SPAN_MS) return null;
    return { sourcePerSecond: slope(this.#samples, (s) => s.source), drainPerSecond: slope(this.#samples, (s) => s.applied) };
  }

  /** Whether the applied index gained on the source across the samples so far. */
  #gaining(): boolean {
    const first = this.#samples[0]!;
    const last = this.#samples.at(-1)!;
    return last.source - last.applied < first.source - first.applied;
  }

  #switch(change: OrderingChange): boolean {
    this.#reordering = change.reordering;
    const now = this.now();
    if (change.reordering) this.#since = now;
    else if (this.#since !== null) {
      this.#totalMs += now - this.#since;
      this.#since = null;
    }
    this.onChange(change);
    return true;
  }
}

const perSecond = (n: number) => `${n.toLocaleString('en-US')}/s`;

/** The log line for a change: which trend decided it, in figures. */
export function describeChange(c: OrderingChange): string {
  const rates = c.sourcePerSecond !== null && c.drainPerSecond !== null ? `source ${perSecond(c.sourcePerSecond)}, ordered writer ${perSecond(c.drainPerSecond)}` : null;
  if (!c.reordering) {
    const toLoss = c.secondsToLoss === null ? '' : `: ~${c.secondsToLoss.toFixed(1)} s to the window's end in source order`;
    return `window headroom restored: ${c.headroomEvents} events${rates ? ` (${rates}${toLoss})` : ''}; writes follow source order again`;
  }
  const overlap = 'writes to unrelated keys may overlap (the replica can show states the source never had)';
  if (c.trigger === 'floor') {
    return `window headroom low: ${c.headroomEvents} events and not recovering, before a trend was measured; ${overlap}`;
  }
  const falling = c.sourcePerSecond! - c.drainPerSecond!;
  const toLoss = c.secondsToLoss === null ? '' : `, ~${c.secondsToLoss.toFixed(1)} s to the window's end`;
  return `window headroom low: ${c.headroomEvents} events, falling ${perSecond(falling)} (${rates})${toLoss}; ${overlap}`;
}
