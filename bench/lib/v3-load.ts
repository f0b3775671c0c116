// Main-thread handle of the v3 load generator worker (v3-load-worker.ts): one run at a time, answered by id.
import { Worker } from 'node:worker_threads';
import { BUCKET_MS, type V3LoadConfig, type V3LoadRequest, type V3LoadResult } from './v3-load-worker.js';
import { round, roundSummary, summarize, type Summary } from './stats.js';

export { loadKey, BUCKET_MS, type V3LoadResult } from './v3-load-worker.js';

export class V3Load {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, { resolve(r: V3LoadResult): void; reject(e: Error): void }>();
  #nextId = 1;
  #gone: Error | undefined;

  constructor(cfg: V3LoadConfig) {
    this.#worker = new Worker(new URL('./v3-load-worker.js', import.meta.url), { workerData: cfg });
    this.#worker.on('message', (msg: { type: 'done'; id: number; result: V3LoadResult } | { type: 'error'; id: number; message: string }) => {
      const w = this.#waiting.get(msg.id);
      if (!w) return;
      this.#waiting.delete(msg.id);
      if (msg.type === 'done') w.resolve(msg.result);
      else w.reject(new Error(`load generator: ${msg.message}`));
    });
    const fail = (err: Error) => {
      this.#gone ??= err;
      for (const w of this.#waiting.values()) w.reject(err);
      this.#waiting.clear();
    };
    this.#worker.on('error', fail);
    this.#worker.on('exit', (code) => fail(new Error(`load generator worker exited (${code})`)));
  }

  run(req: V3LoadRequest): Promise<V3LoadResult> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#worker.postMessage({ type: 'run', id, req });
    });
  }

  async close(): Promise<void> {
    if (this.#gone) return;
    const exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    const timer = setTimeout(() => void this.#worker.terminate(), 5_000);
    this.#worker.postMessage({ type: 'close' });
    await exited;
    clearTimeout(timer);
  }
}

/** The figures of one load run that go into the results (the per-put arrays stay out of the JSON). */
export interface LoadSummary {
  loop: 'closed' | 'open';
  keyPrefix: string;
  seconds: number;
  sent: number;
  acked: number;
  errors: number;
  errorSamples: string[];
  notSent: number;
  putsPerSecond: number;
  ackLatencyMs: Summary;
  firstRevision: number | null;
  lastRevision: number;
  maxTickGapMs: number;
}

export function summarizeLoad(r: V3LoadResult): LoadSummary {
  const seconds = (r.sendEndedAt - r.startedAt) / 1000;
  let first: number | null = null;
  for (const rev of r.revisions) if (rev > 0 && (first === null || rev < first)) first = rev;
  return {
    loop: r.loop,
    keyPrefix: r.keyPrefix,
    seconds: round(seconds, 3),
    sent: r.sent,
    acked: r.acked,
    errors: r.errors,
    errorSamples: r.errorSamples,
    notSent: r.notSent,
    // Acknowledgements within the sending window, per second of it (the tail answered after it is left out).
    putsPerSecond: round(acksBetween(r, r.startedAt, r.sendEndedAt) / Math.max(0.001, seconds), 1),
    ackLatencyMs: roundSummary(summarize(r.latencies), 2),
    firstRevision: first,
    lastRevision: r.maxRevision,
    maxTickGapMs: round(r.maxTickGapMs, 1),
  };
}

/** Acknowledgements with their 100 ms bucket inside [from, to) (epoch ms). */
export function acksBetween(r: V3LoadResult, from: number, to: number): number {
  let n = 0;
  const a = Math.max(0, Math.floor((from - r.startedAt) / BUCKET_MS));
  const b = Math.min(r.ackBuckets.length, Math.floor((to - r.startedAt) / BUCKET_MS));
  for (let i = a; i < b; i++) n += r.ackBuckets[i]!;
  return n;
}
