// Time as the poller sees it: real by default; tests pass a clock they drive, so that no test depends on how fast
// the machine is.
import { setTimeout as sleep } from 'node:timers/promises';

export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean anything). */
  now(): number;
  /** Resolves after `ms`; rejects with an AbortError when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` once after `ms` without keeping the process alive; returns the cancel. */
  after(ms: number, fn: () => void): () => void;
  /** Calls `fn` every `ms` until cancelled; returns the cancel. */
  every(ms: number, fn: () => void): () => void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
  every: (ms, fn) => {
    const timer = setInterval(fn, ms);
    return () => clearInterval(timer);
  },
};
