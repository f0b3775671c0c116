// The keys waiting to be healed — foreign changes the destination watch saw and the audit's repairs — and when they
// run: between two replicated writes (a barrier in the destination's writer, so no replicated change is in flight),
// once the destination has caught up with the revision each must be judged at. One queue per run (pipeline.ts).
import { keyId } from './keyspace.js';
import type { Log } from './ports.js';
import type { DestinationRun, HealItem } from './types.js';

/** How soon a heal that must wait for the destination to catch up is tried again. */
const HEAL_RETRY_MS = 200;

export interface HealQueueDeps {
  log: Log;
  signal: AbortSignal;
  /** The run to heal through, or null while heals may not run (not tailing yet, stopped, faulted). */
  runnable(): DestinationRun | null;
  /** The source revision up to which everything is on the destination. */
  applied(): number | null;
}

export class HealQueue {
  readonly #items = new Map<string, HealItem>();
  #scheduled = false;
  #timer: NodeJS.Timeout | undefined;
  /** Audits waiting for their keys to be healed, with the writes made for them so far. */
  #waiters: { ids: Set<string>; written: number; done: (written: number) => void }[] = [];

  constructor(private readonly deps: HealQueueDeps) {}

  /** Destination keys someone else changed. */
  foreign(keys: Buffer[]): void {
    for (const key of keys) {
      const id = keyId(key);
      if (!this.#items.has(id)) this.#items.set(id, { id, key, retryAt: 0 });
    }
    this.schedule();
  }

  /** The audit's repairs: resolves with the keys written (0 for those the run ends before). */
  audit(keys: Buffer[]): Promise<number> {
    const ids = new Set<string>();
    for (const key of keys) {
      const id = keyId(key);
      ids.add(id);
      this.#items.set(id, { id, key, retryAt: 0, audit: true });
    }
    return new Promise<number>((done) => {
      this.#waiters.push({ ids, written: 0, done });
      this.schedule();
    });
  }

  /** Runs the heals that are due (again when the applied revision moved, or a run may heal now). */
  schedule(): void {
    if (this.#scheduled || this.#items.size === 0) return;
    const run = this.deps.runnable();
    if (!run) return;
    const at = this.deps.applied();
    if (at === null || ![...this.#items.values()].some((h) => h.retryAt <= at)) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.schedule();
      }, HEAL_RETRY_MS);
      return;
    }
    this.#scheduled = true;
    run.barrier(() => this.#heal(run)).then(
      () => {
        this.#scheduled = false;
        this.schedule();
      },
      (err: unknown) => {
        this.#scheduled = false;
        if (!this.deps.signal.aborted) this.deps.log.warn({ err }, 'could not heal destination keys');
      },
    );
  }

  /** The run ends: nothing more is scheduled, and every audit waiting hears what was written for it. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#settle(true);
  }

  async #heal(run: DestinationRun): Promise<void> {
    const at = this.deps.applied();
    if (at === null || this.deps.signal.aborted) return;
    const due = [...this.#items.values()].filter((h) => h.retryAt <= at);
    if (due.length === 0) return;
    const outcome = await run.heal(due, at);
    for (const item of due) {
      const o = outcome.get(item.id);
      if (o && 'retryAt' in o) {
        item.retryAt = o.retryAt;
        continue;
      }
      this.#items.delete(item.id);
      for (const w of this.#waiters) if (w.ids.has(item.id)) w.written += o?.written ?? 0;
    }
    this.#settle(false);
  }

  /** Resolves the waiters whose keys are all handled (`all`: every one, the run is ending). */
  #settle(all: boolean): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (!all && [...w.ids].some((id) => this.#items.has(id))) return true;
      w.done(w.written);
      return false;
    });
  }
}
