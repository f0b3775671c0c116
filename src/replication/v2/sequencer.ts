// The poller's bookkeeping, without I/O: events and quiet claims released in index order, every later delivery
// checked against the claims, and claims confirmed (positively, or after a quiet wait on a live connection) before
// anything may be stored. The poller (poller.ts) explains why each rule holds.
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { ResyncNeededError } from '../../etcd/errors.js';
import type { BodyGaps } from './body-gaps.js';
import { realClock, type Clock } from './clock.js';

/** What the sequencer hands over (a part of the poller's sink). */
export interface SequencerSink {
  event(ev: EtcdEvent): void;
  quiet(index: number): void;
  confirmed?(index: number): void;
  poll(outcome: 'quiet'): void;
}

/** Claimed ranges remembered for contradiction checks. */
const CLAIMS_KEPT = 4_096;

interface Claim {
  from: number;
  to: number;
  /** When the claim was made (or last re-verified), clock ms. */
  at: number;
  /** False after the connection that would carry a contradiction was lost, until a new watch re-verified it. */
  verified: boolean;
}

/** Releases events and quiet proofs in index order, checks every later delivery against the claims, and confirms them. */
export class Sequencer {
  last: number;
  readonly #claims: Omit<Claim, 'verified'>[] = [];
  /** Claims not confirmed yet, in index order (contiguous with nothing but events in between). */
  readonly #pending: Claim[] = [];
  #confirmed: number;
  failure: ResyncNeededError | null = null;
  #onFailure: (() => void) | null = null;

  constructor(
    start: number,
    private readonly sink: SequencerSink,
    private readonly gaps: BodyGaps,
    private readonly clock: Pick<Clock, 'now'> = realClock,
  ) {
    this.last = start;
    this.#confirmed = start;
  }

  /** A watch without waitIndex covers exactly what comes after its X-Etcd-Index. */
  startAt(index: number): void {
    this.last = index;
    this.#confirmed = index;
    this.sink.confirmed?.(index);
  }

  /**
   * `coveredFrom`: the delivering channel carries every prefix event above this index, in order (the stream's
   * X-Etcd-Index): claims above it and below the event are then confirmed.
   */
  release(ev: EtcdEvent, coveredFrom?: number): void {
    const index = ev.node.modifiedIndex;
    if (index <= this.last) {
      this.check(index);
      return; // a duplicate (stream and history overlap, etcd's double delete on the watched path)
    }
    this.last = index;
    this.sink.event(ev);
    if (coveredFrom !== undefined) this.confirmBelow(index, coveredFrom);
    this.#advance();
  }

  claim(from: number, to: number): void {
    this.sink.poll('quiet');
    if (to <= this.last) return;
    const start = Math.max(from, this.last + 1);
    const at = this.clock.now();
    this.#claims.push({ from: start, to, at });
    if (this.#claims.length > CLAIMS_KEPT) this.#claims.shift();
    this.#pending.push({ from: start, to, at, verified: true });
    this.last = to;
    this.sink.quiet(to);
  }

  /** Positive proof: nothing lies in (coveredFrom, index) but what was delivered. */
  confirmBelow(index: number, coveredFrom: number): void {
    if (this.failure) return;
    let n = 0;
    while (n < this.#pending.length && this.#pending[n]!.to < index && this.#pending[n]!.from > coveredFrom) n++;
    if (n === 0) return;
    this.#pending.splice(0, n);
    this.#advance();
  }

  /** Store indexes per ms, from the claims of the last second or so (claims end at the store index). */
  #storePerMs(): number {
    const first = this.#claims[Math.max(0, this.#claims.length - 32)];
    const last = this.#claims[this.#claims.length - 1];
    if (!first || !last || last.at <= first.at) return 0;
    return (last.to - first.to) / (last.at - first.at);
  }

  /** Confirms claims that stayed uncontradicted for confirmMs on a live connection. */
  tick(): void {
    if (this.failure) return;
    const now = this.clock.now();
    const wait = this.gaps.confirmMs(this.#storePerMs());
    let n = 0;
    while (n < this.#pending.length && this.#pending[n]!.verified && this.#pending[n]!.at + wait <= now) n++;
    if (n === 0) return;
    this.#pending.splice(0, n);
    this.#advance();
  }

  /** The connection that carried the claims' contradictions is gone: they need a new watch's word. */
  connectionLost(): void {
    for (const c of this.#pending) c.verified = false;
  }

  /** Start and end of the claims waiting for re-verification, or null. */
  unverified(): { from: number; to: number } | null {
    const open = this.#pending.filter((c) => !c.verified);
    return open.length ? { from: open[0]!.from, to: open[open.length - 1]!.to } : null;
  }

  /** A new watch from `from` stayed silent up to `to`: the claims it covers count from now. */
  reverified(to: number): void {
    const now = this.clock.now();
    for (const c of this.#pending) {
      if (!c.verified && c.to <= to) {
        c.verified = true;
        c.at = now;
      }
    }
  }

  #advance(): void {
    const next = this.#pending.length ? this.#pending[0]!.from - 1 : this.last;
    if (next > this.#confirmed) {
      this.#confirmed = next;
      this.sink.confirmed?.(next);
    }
  }

  /** An event at `index` was delivered: if a claim ruled it out, the claim was wrong. */
  check(index: number): void {
    if (this.failure) return;
    const wrong = this.#claims.find((c) => index >= c.from && index <= c.to);
    if (wrong) {
      // The body was at least this late: the next poller sharing `gaps` waits longer before it calls silence.
      this.gaps.record(this.clock.now() - wrong.at + this.gaps.silenceMs());
      this.failure = new ResyncNeededError(`the source delivered event ${index} inside a range proven quiet; resynchronising from a snapshot`, wrong.from);
      this.#onFailure?.();
    }
  }

  failed(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.failure) reject(this.failure);
      else this.#onFailure = () => reject(this.failure);
    });
  }
}
