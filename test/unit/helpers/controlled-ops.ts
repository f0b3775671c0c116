// Write ops whose completion the test controls: each `run` returns a promise that stays pending until the
// test settles it, and every start/finish is recorded in one logical order.
import type { WriteItem } from '../../../src/replication/v2/writer.js';

export interface PendingRun {
  index: number;
  key: string;
  subtree: boolean;
  settle(outcome?: { error: unknown }): void;
}

export interface Trace {
  type: 'start' | 'finish';
  index: number;
  /** Logical time: position in the trace. */
  at: number;
}

export class ControlledOps {
  readonly trace: Trace[] = [];
  /** Started and not yet settled, in start order. */
  readonly pending: PendingRun[] = [];
  readonly startCount = new Map<number, number>();
  running = 0;
  maxRunning = 0;

  /** An op for `index`; it starts when the writer calls run() and ends when the test settles it. */
  op(index: number, key: string, subtree = false): NonNullable<WriteItem['op']> {
    return {
      key,
      subtree,
      run: () =>
        new Promise<void>((resolve, reject) => {
          this.startCount.set(index, (this.startCount.get(index) ?? 0) + 1);
          this.running++;
          this.maxRunning = Math.max(this.maxRunning, this.running);
          this.trace.push({ type: 'start', index, at: this.trace.length });
          const run: PendingRun = {
            index,
            key,
            subtree,
            settle: (outcome) => {
              this.pending.splice(this.pending.indexOf(run), 1);
              this.running--;
              if (outcome) {
                reject(outcome.error);
              } else {
                this.trace.push({ type: 'finish', index, at: this.trace.length });
                resolve();
              }
            },
          };
          this.pending.push(run);
        }),
    };
  }

  started(index: number): boolean {
    return this.startCount.has(index);
  }

  /** The pending run for `index` (throws if it has not started or already settled). */
  run(index: number): PendingRun {
    const r = this.pending.find((p) => p.index === index);
    if (!r) throw new Error(`no pending run for index ${index}`);
    return r;
  }

  /** Indexes currently running, in start order. */
  runningIndexes(): number[] {
    return this.pending.map((p) => p.index);
  }
}

/** Lets every queued promise reaction (the writer's .then callbacks) run. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
