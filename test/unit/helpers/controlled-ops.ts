// The v2 writer on a destination whose writes the test controls: each request the writer sends stays pending
// until the test settles it, and every start/finish is recorded in one logical order. Event writes are named by
// their source index (the destination key's pushed writes start in push order, so a request on a key is the
// oldest unstarted write pushed on it, or else a redo of the last one started).
import type { EtcdClient } from '../../../src/etcd/v2/client.js';
import { KeyNotFoundError } from '../../../src/etcd/errors.js';
import type { KeyMap } from '../../../src/replication/keys.js';
import type { Log, ReplicationMetrics } from '../../../src/replication/ports.js';
import { Coverage } from '../../../src/replication/v2/coverage.js';
import type { WriteOrdering } from '../../../src/replication/v2/order.js';
import { V2Writer, type EventWrite } from '../../../src/replication/v2/writer.js';

export interface PendingRun {
  index: number;
  key: string;
  /** Sent on the ordered lane. */
  onLane: boolean;
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
  /** Per destination key, the indexes of event writes pushed and not started yet. */
  readonly #queued = new Map<string, number[]>();
  readonly #lastStarted = new Map<string, number>();
  /** What a read of a key shows (absent: not found). */
  readonly copies = new Map<string, string>();

  /** The destination: plain requests and the ordered lane's both start a pending run. */
  readonly dst = {
    put: (key: string) => this.#start(this.#next(key), key, false),
    delete: (key: string) => this.#start(this.#next(key), key, false),
    get: async (key: string) => {
      const value = this.copies.get(key);
      if (value === undefined) throw new KeyNotFoundError(100, 'Key not found', key, 1, 404);
      return { body: { node: { key, value } } };
    },
    orderedLane: () => ({
      put: (key: string) => this.#start(this.#next(key), key, true),
      delete: (key: string) => this.#start(this.#next(key), key, true),
      close: async () => {},
    }),
  } as unknown as EtcdClient;

  /** The event write for `index`: a put on `key`, or with `subtree` a recursive delete of it. */
  op(index: number, key: string, subtree = false): EventWrite {
    this.#queue(index, key);
    return subtree
      ? { op: { kind: 'delete', key }, leaf: null, srcKey: key, action: 'delete' }
      : { op: { kind: 'put', key, value: `v${index}` }, leaf: null, srcKey: key, action: 'set' };
  }

  /** A put that may go on the ordered lane. */
  laneOp(index: number, key: string): EventWrite {
    const write = this.op(index, key);
    return { ...write, leaf: { op: { kind: 'put', key, value: `v${index}` }, before: null } };
  }

  /** A closure (a TTL refresh) named `index`. */
  closure(index: number, key: string): () => Promise<void> {
    return () => this.#start(index, key, false);
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

  #queue(index: number, key: string): void {
    const fifo = this.#queued.get(key);
    if (fifo) fifo.push(index);
    else this.#queued.set(key, [index]);
  }

  #next(key: string): number {
    const index = this.#queued.get(key)?.shift() ?? this.#lastStarted.get(key);
    if (index === undefined) throw new Error(`a request on ${key} that no pushed write explains`);
    this.#lastStarted.set(key, index);
    return index;
  }

  #start(index: number, key: string, onLane: boolean): Promise<never> {
    return new Promise<never>((resolve, reject) => {
      this.startCount.set(index, (this.startCount.get(index) ?? 0) + 1);
      this.running++;
      this.maxRunning = Math.max(this.maxRunning, this.running);
      this.trace.push({ type: 'start', index, at: this.trace.length });
      const run: PendingRun = {
        index,
        key,
        onLane,
        settle: (outcome) => {
          this.pending.splice(this.pending.indexOf(run), 1);
          this.running--;
          if (outcome) {
            reject(outcome.error);
          } else {
            this.trace.push({ type: 'finish', index, at: this.trace.length });
            resolve(undefined as never);
          }
        },
      };
      this.pending.push(run);
    });
  }
}

const noop = () => {};
const log: Log = { debug: noop, info: noop, warn: noop, error: noop };

/** Metrics that count only what the writer's tests read. */
export function writerMetrics(): ReplicationMetrics & { reordered: number } {
  const counter = { inc: noop };
  const m = {
    reordered: 0,
    reorderedWrites: { inc: () => m.reordered++ },
    writeLatency: { observe: noop, startTimer: () => noop },
    eventWait: { observe: noop },
    eventOverhead: { observe: noop },
    eventsApplied: { labels: () => counter },
    eventsSkipped: { labels: () => counter },
    replicatedEvents: counter,
    writeRetries: counter,
  };
  return m as unknown as ReplicationMetrics & { reordered: number };
}

export interface WriterSetup {
  start?: number;
  concurrency?: number;
  ordering?: WriteOrdering;
  /** The ordered lane's depth; absent: no lane. */
  laneDepth?: number;
  onError?: (err: unknown) => void;
  onCheckpoint?: (index: number) => void;
}

/** A writer on the controlled destination. */
export function controlledWriter(ops: ControlledOps, opts: WriterSetup = {}) {
  const metrics = writerMetrics();
  const writer = new V2Writer(opts.start ?? 0, {
    dst: ops.dst,
    map: { dstRoot: '/' } as KeyMap,
    log,
    metrics,
    coverage: new Coverage(),
    healStats: {},
    signal: new AbortController().signal,
    concurrency: opts.concurrency ?? 8,
    ordering: opts.ordering ?? 'key',
    laneDepth: opts.laneDepth ?? null,
    hooks: { applied: opts.onCheckpoint ?? noop, failed: opts.onError ?? noop },
  });
  return { writer, metrics };
}

/** The source index a failed write's error names (DestinationWriteError: "... (source index N) ..."). */
export function failedIndex(err: unknown): number | undefined {
  const m = /source index (\d+)/.exec(err instanceof Error ? err.message : '');
  return m ? Number(m[1]) : undefined;
}

/** Lets every queued promise reaction (the writer's .then callbacks) run. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
