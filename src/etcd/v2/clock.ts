// A cluster's wall clock, estimated from the HTTP `Date` header of its answers, so that TTL arithmetic (etcd's
// `expiration` is the leader's wall clock) does not depend on this host's clock.
//
// `Date` has 1 s resolution and Go truncates it: a server that wrote header D (ms, a whole second) at some moment
// between our send time tSend and receive time tRecv had a clock in [D, D + 1000) then, so
//   offset = serverClock − ourClock ∈ [D − tRecv, D + 1000 − tSend].
// Each answer gives one such interval; their intersection narrows quickly (answers land at different phases of
// the server's second). Only recent answers count: the window is kept as a few buckets, each the intersection of
// its answers, and a bucket's interval widens by the largest drift two NTP-disciplined clocks can have (500 ppm,
// NTP's slew limit) as it ages. An answer that contradicts what is known drops the oldest buckets until it fits;
// when it contradicts even the newest one, a clock stepped, and the estimate restarts from that answer.
//
// Pure: every time is passed in (observe, sample) or injected (now); no allocation per answer.

export interface ServerClockOptions {
  /** Answers older than this (by their receive time) no longer narrow the estimate. @default 60000 */
  windowMs?: number;
  /** The window is kept as this many buckets. @default 6 */
  buckets?: number;
  /** How fast the two clocks may drift apart, in parts per million: old bounds widen by this. @default 500 */
  driftPpm?: number;
  /** Our clock, ms since the epoch. @default Date.now */
  now?: () => number;
}

export class ServerClock {
  readonly #bucketMs: number;
  readonly #count: number;
  readonly #drift: number;
  readonly #localNow: () => number;
  /** Per bucket: its number (floor(tRecv / bucketMs), NaN = empty), its bounds, and when they were last narrowed. */
  readonly #id: Float64Array;
  readonly #lo: Float64Array;
  readonly #hi: Float64Array;
  readonly #at: Float64Array;
  /** Newest bucket number, or NaN before the first answer. */
  #current = Number.NaN;
  /** The estimate as of #estAt (recomputed on every answer: a handful of buckets). */
  #estLo = Number.NaN;
  #estHi = Number.NaN;
  #estAt = Number.NaN;
  #samples = 0;
  #restarts = 0;
  /** Last `Date` header seen and its value: every answer within one second carries the same string. */
  #lastHeader = '';
  #lastHeaderMs = Number.NaN;

  constructor(opts: ServerClockOptions = {}) {
    const windowMs = opts.windowMs ?? 60_000;
    this.#count = Math.max(1, Math.floor(opts.buckets ?? 6));
    this.#bucketMs = Math.max(1, windowMs / this.#count);
    this.#drift = Math.max(0, opts.driftPpm ?? 500) / 1e6;
    this.#localNow = opts.now ?? Date.now;
    this.#id = new Float64Array(this.#count).fill(Number.NaN);
    this.#lo = new Float64Array(this.#count);
    this.#hi = new Float64Array(this.#count);
    this.#at = new Float64Array(this.#count);
  }

  /** Feeds one answer: our send and receive times (ms) and its raw `Date` header (ignored when absent or invalid). */
  observe(tSend: number, tRecv: number, dateHeader: string | undefined): void {
    if (dateHeader === undefined) return;
    if (dateHeader !== this.#lastHeader) {
      this.#lastHeader = dateHeader;
      this.#lastHeaderMs = Date.parse(dateHeader);
    }
    this.sample(tSend, tRecv, this.#lastHeaderMs);
  }

  /** Feeds one answer whose `Date` header said `serverMs` (ms since the epoch, a whole second). */
  sample(tSend: number, tRecv: number, serverMs: number): void {
    // Our clock stepped back during the request: the pair says nothing reliable.
    if (!Number.isFinite(serverMs) || !Number.isFinite(tSend) || !Number.isFinite(tRecv) || tRecv < tSend) return;
    const lo = serverMs - tRecv;
    const hi = serverMs + 1000 - tSend;
    const t = tRecv;
    this.#samples++;
    // A bucket number never goes back (our clock may step back a little without contradicting the estimate).
    const bucket = Math.floor(t / this.#bucketMs);
    const id = Number.isNaN(this.#current) ? bucket : Math.max(this.#current, bucket);
    if (id !== this.#current) {
      this.#current = id;
      for (let i = 0; i < this.#count; i++) if (this.#id[i]! <= id - this.#count) this.#id[i] = Number.NaN; // left the window
    }
    if (this.#live() > 0) {
      this.#estimate(t);
      if (hi < this.#estLo || lo > this.#estHi) {
        // Old knowledge goes first; if even the newest contradicts this answer, a clock stepped.
        while (this.#dropOldest()) {
          this.#estimate(t);
          if (hi >= this.#estLo && lo <= this.#estHi) break;
        }
        if (this.#live() === 0) this.#restarts++;
      }
    }
    const slot = ((id % this.#count) + this.#count) % this.#count;
    if (this.#id[slot] !== id) {
      this.#id[slot] = id;
      this.#lo[slot] = lo;
      this.#hi[slot] = hi;
    } else {
      const widen = this.#drift * Math.max(0, t - this.#at[slot]!);
      this.#lo[slot] = Math.max(this.#lo[slot]! - widen, lo);
      this.#hi[slot] = Math.min(this.#hi[slot]! + widen, hi);
    }
    this.#at[slot] = t;
    this.#estimate(t);
  }

  #live(): number {
    let n = 0;
    for (let i = 0; i < this.#count; i++) if (!Number.isNaN(this.#id[i]!)) n++;
    return n;
  }

  /** Intersection of the live buckets' bounds, each widened by the drift since it was last narrowed. */
  #estimate(t: number): void {
    let lo = Number.NEGATIVE_INFINITY;
    let hi = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.#count; i++) {
      if (Number.isNaN(this.#id[i]!)) continue;
      const widen = this.#drift * Math.max(0, t - this.#at[i]!);
      lo = Math.max(lo, this.#lo[i]! - widen);
      hi = Math.min(hi, this.#hi[i]! + widen);
    }
    this.#estLo = lo;
    this.#estHi = hi;
    this.#estAt = t;
  }

  #dropOldest(): boolean {
    let oldest = -1;
    for (let i = 0; i < this.#count; i++) {
      if (!Number.isNaN(this.#id[i]!) && (oldest < 0 || this.#id[i]! < this.#id[oldest]!)) oldest = i;
    }
    if (oldest < 0) return false;
    this.#id[oldest] = Number.NaN;
    return true;
  }

  /** Best estimate of (cluster clock − our clock), ms: the middle of what recent answers allow; 0 before any. */
  offsetMs(): number {
    return Number.isNaN(this.#current) ? 0 : (this.#estLo + this.#estHi) / 2;
  }

  /** Half the width of the allowed offset range now, ms (about 500 after one answer); Infinity before any. */
  uncertaintyMs(): number {
    if (Number.isNaN(this.#current)) return Number.POSITIVE_INFINITY;
    return (this.#estHi - this.#estLo) / 2 + this.#drift * Math.max(0, this.#localNow() - this.#estAt);
  }

  /** The cluster's clock now, ms since the epoch (our clock until the first answer). */
  now(): number {
    return this.#localNow() + this.offsetMs();
  }

  /** Answers taken into account, and how many of them restarted the estimate (a clock step). */
  stats(): { samples: number; restarts: number } {
    return { samples: this.#samples, restarts: this.#restarts };
  }
}
