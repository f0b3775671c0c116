// A bounded rate of optional requests to an expensive source (one whose authenticated requests cost more than
// EXPENSIVE_REQUEST_MS: a v2 password is checked with bcrypt on every request). Quiet proofs and TTL re-reads
// wait for a slot; the stream and the events themselves are never held back. The window wins over the budget:
// a quiet proof goes ahead above the budget when waiting longer would let more than WINDOW_SAFE_EVENTS store
// indexes pass since the last one, and the mirror says so.
import { setTimeout as sleep } from 'node:timers/promises';

export const DEFAULT_SOURCE_BUDGET_PER_SECOND = 5;
/**
 * Store indexes that may pass between two quiet proofs, whatever the budget: with the confirmation wait (at most
 * 120 indexes) and the write path behind it, the stored index stays well inside etcd's 1000-event window.
 */
export const WINDOW_SAFE_EVENTS = 200;
/** Catch-up long-polls in flight on an expensive source: more only queue for the server's CPU. */
export const EXPENSIVE_CATCH_UP_PARALLEL = 4;
/** An over-budget episode ends after this long without an over-budget proof. */
const EPISODE_QUIET_MS = 30_000;

export type BudgetPurpose = 'proof' | 'ttl' | 'audit';

export interface SourceBudgetHooks {
  counted(purpose: BudgetPurpose): void;
  /** A proof went ahead above the budget; `starts` is true for the first of an episode. */
  exceeded(storeIndexesPerSecond: number, starts: boolean): void;
}


export class SourceBudget {
  #nextSlotAt = 0;
  #exceededAt: number | null = null;
  #storePerSecond: number | null = null;

  constructor(
    /** Optional requests per second; 0 = unlimited. */
    readonly perSecond: number,
    private readonly expensive: () => boolean,
    private readonly hooks: SourceBudgetHooks,
    /** Injected by tests on fake time. */
    private readonly wait: (ms: number, signal?: AbortSignal) => Promise<unknown> = (ms, signal) => sleep(ms, undefined, { signal }),
  ) {}

  get active(): boolean {
    return this.perSecond > 0 && this.expensive();
  }

  catchUpParallel(configured: number): number {
    return this.active ? Math.min(configured, EXPENSIVE_CATCH_UP_PARALLEL) : configured;
  }

  /**
   * Waits for the next slot. A quiet proof passes the store's index rate: it waits at most as long as the window
   * allows (WINDOW_SAFE_EVENTS since the last proof, `sinceLastMs` ago), and goes ahead above the budget after that.
   */
  async take(purpose: BudgetPurpose, signal?: AbortSignal, proof?: { storePerMs: number; sinceLastMs: number }): Promise<void> {
    this.hooks.counted(purpose);
    if (proof) this.#storePerSecond = Math.round(proof.storePerMs * 1000);
    if (!this.active) return;
    const now = performance.now();
    const slot = Math.max(now, this.#nextSlotAt);
    const windowWaitMs = proof && proof.storePerMs > 0 ? Math.max(0, WINDOW_SAFE_EVENTS / proof.storePerMs - proof.sinceLastMs) : Infinity;
    if (slot - now > windowWaitMs) {
      // Over budget: this proof takes no slot, so the budgeted requests keep theirs.
      await this.wait(windowWaitMs, signal);
      const starts = this.#exceededAt === null || performance.now() - this.#exceededAt > EPISODE_QUIET_MS;
      this.#exceededAt = performance.now();
      this.hooks.exceeded(this.#storePerSecond ?? 0, starts);
      return;
    }
    this.#nextSlotAt = slot + 1000 / this.perSecond;
    if (slot > now) await this.wait(slot - now, signal);
  }

  /** For /state (its shape is the wire's SourceBudgetJson, src/ui/wire.ts, checked where /state is built). */
  view() {
    const exceeded = this.#exceededAt !== null && performance.now() - this.#exceededAt <= EPISODE_QUIET_MS;
    return {
      perSecond: this.perSecond,
      active: this.active,
      exceeded,
      storeIndexesPerSecond: this.#storePerSecond,
      message: exceeded ? this.exceededMessage(this.#storePerSecond ?? 0) : null,
    };
  }

  exceededMessage(storeIndexesPerSecond: number): string {
    return (
      `the source request budget (${this.perSecond}/s) would let the quiet prefix fall out of etcd's 1000-event window at ` +
      `~${storeIndexesPerSecond} store indexes/s: quiet proofs go ahead above the budget (at most ${WINDOW_SAFE_EVENTS} indexes apart)`
    );
  }
}
