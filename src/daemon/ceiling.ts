// The ordered ceiling of a v2 destination, measured from the mirror's own writes: how many events/s strict source
// order can carry at the destination's current write latency (the ordered lane's answered writes per second of
// it being busy), next to the rate the source sends mirrored events. v2 has no multi-key write, so in source
// order one write waits for the one before it: the ceiling is about 1 / commit latency, and an operator whose
// source approaches it is told once per episode (then v3, or the v2 → v3 bridge, is how to keep order higher).

/** Rates are taken over this much recent time. */
const WINDOW_MS = 10_000;
/** Busy time and answered writes needed before a ceiling is said: fewer say nothing about the destination. */
const MIN_BUSY_MS = 5;
const MIN_WRITES = 10;
/** The source "approaches" the ceiling from this fraction of it on, until it is back below the lower one. */
const APPROACH = 0.8;
const LEAVE = 0.6;
/** A source this slow is no concern, whatever the ceiling. */
const MIN_SOURCE_PER_SECOND = 5;

export interface CeilingSample {
  /** ms, monotonic */
  at: number;
  answered: number;
  busyMs: number;
  received: number;
}

export interface CeilingView {
  /** Events/s strict order holds at the current write latency (null: not measured yet). */
  ceilingPerSecond: number | null;
  /** Destination write time per ordered write, ms (null: not measured yet). */
  writeMs: number | null;
  /** Mirrored events/s the source sends. */
  sourcePerSecond: number | null;
  approaching: boolean;
}

export class OrderedCeiling {
  #samples: CeilingSample[] = [];
  #approaching = false;

  constructor(private readonly onEpisode: (approaching: boolean, view: CeilingView) => void = () => {}) {}

  /** A sample of the run's counters (they restart from 0 with each run). */
  add(sample: CeilingSample): void {
    const last = this.#samples[this.#samples.length - 1];
    if (last && (sample.answered < last.answered || sample.received < last.received)) this.#samples = [];
    this.#samples.push(sample);
    while (this.#samples.length > 2 && this.#samples[1]!.at <= sample.at - WINDOW_MS) this.#samples.shift();
    const view = this.view();
    if (view.ceilingPerSecond === null || view.sourcePerSecond === null) return;
    const next = this.#approaching
      ? view.sourcePerSecond >= LEAVE * view.ceilingPerSecond
      : view.sourcePerSecond >= MIN_SOURCE_PER_SECOND && view.sourcePerSecond >= APPROACH * view.ceilingPerSecond;
    if (next === this.#approaching) return;
    this.#approaching = next;
    this.onEpisode(next, { ...view, approaching: next });
  }

  reset(): void {
    this.#samples = [];
  }

  view(): CeilingView {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (!first || !last || last.at <= first.at) return { ceilingPerSecond: null, writeMs: null, sourcePerSecond: null, approaching: this.#approaching };
    const busyMs = last.busyMs - first.busyMs;
    const writes = last.answered - first.answered;
    const measured = busyMs >= MIN_BUSY_MS && writes >= MIN_WRITES;
    return {
      ceilingPerSecond: measured ? Math.round((writes * 1000) / busyMs) : null,
      writeMs: measured ? Math.round((busyMs / writes) * 100) / 100 : null,
      sourcePerSecond: Math.round(((last.received - first.received) * 1000) / (last.at - first.at)),
      approaching: this.#approaching,
    };
  }
}

/** The log line of an episode's start. */
export function approachMessage(v: CeilingView): string {
  return (
    `strict order holds up to ~${v.ceilingPerSecond} events/s at the destination's current ~${v.writeMs} ms per write; ` +
    `the source writes ~${v.sourcePerSecond}/s (v2 has no multi-key write: above the ceiling the lag grows; a v3 destination, or the v2 → v3 bridge, keeps order at higher rates)`
  );
}
