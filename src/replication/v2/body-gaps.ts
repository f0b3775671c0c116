// How long a watch's body may trail its headers: the measure behind every silence verdict and confirmation wait.
import { realClock, type Clock } from './clock.js';

/** Silence after the headers before a watch counts as blocked, at least. A wrong guess is caught (resync), not fatal. */
export const SILENCE_MS = 15;
const SILENCE_MAX_MS = 250;
const CONFIRM_MIN_MS = 100;
const CONFIRM_MAX_MS = 2_000;
/** Store indexes a confirmation wait may let pass at most. */
const CONFIRM_BUDGET_EVENTS = 120;
const GAPS_KEPT_MS = 60_000;

/**
 * The largest recent gap between a watch's headers and its history match's body. Silence thresholds and
 * confirmation waits follow it, so a slow path (busy CPU, lossy link) makes the poller more careful by itself.
 */
export class BodyGaps {
  #samples: { at: number; ms: number }[] = [];
  #max = 0;

  constructor(private readonly clock: Pick<Clock, 'now'> = realClock) {}

  record(ms: number): void {
    if (ms <= 1) return; // the common case: bytes together
    this.#samples.push({ at: this.clock.now(), ms });
    if (this.#samples.length > 256) this.#samples.shift();
    this.#max = Math.max(this.#max, ms);
  }

  maxMs(): number {
    const now = this.clock.now();
    if (this.#samples.length && this.#samples[0]!.at < now - GAPS_KEPT_MS) {
      this.#samples = this.#samples.filter((s) => s.at >= now - GAPS_KEPT_MS);
      this.#max = this.#samples.reduce((m, s) => Math.max(m, s.ms), 0);
    }
    return this.#max;
  }

  silenceMs(): number {
    return Math.min(SILENCE_MAX_MS, Math.max(SILENCE_MS, Math.ceil(2 * this.maxMs())));
  }

  /**
   * How long a claim must stay uncontradicted. `storePerMs`: how fast the source's store index moves. The wait
   * never lets more than CONFIRM_BUDGET_EVENTS store indexes pass (the stored index must stay well inside etcd's
   * 1000-event window), and never drops below twice the silence threshold.
   */
  confirmMs(storePerMs = 0): number {
    const wanted = Math.min(CONFIRM_MAX_MS, Math.max(CONFIRM_MIN_MS, Math.ceil(8 * this.maxMs())));
    const budget = storePerMs > 0 ? CONFIRM_BUDGET_EVENTS / storePerMs : Infinity;
    return Math.max(2 * this.silenceMs(), Math.min(wanted, budget));
  }
}
