// The pipeline (src/replication/pipeline.ts) with an in-memory source and destination, no sockets: the jobs it
// does once for every destination kind — order, the checkpoint policy, the rollback of a contradicted quiet claim,
// the final checkpoint on stop, the source-history check.
import { describe, expect, it } from 'vitest';
import type { MirrorEvent } from '../../machines/types.js';
import { EventIndexClearedError, ResyncNeededError } from '../../src/etcd/errors.js';
import { Channel } from '../../src/replication/channel.js';
import { PipelineHost } from '../../src/replication/pipeline.js';
import type { ReplicationMetrics, ReplicationOptions } from '../../src/replication/ports.js';
import type { Destination, DestinationRun, HealOutcome, Source, SourceMessage, WriterHooks } from '../../src/replication/types.js';

const noop = (): unknown => new Proxy(() => {}, { get: (_t, p) => (p === 'then' ? undefined : noop()), apply: () => noop() });
const metrics = new Proxy({ lastApplyAt: 0 }, { get: (t, p) => (p in t ? t[p as 'lastApplyAt'] : noop()) }) as unknown as ReplicationMetrics;
const log = { debug() {}, info() {}, warn() {}, error() {} };
const config = { checkpointMs: 20, pipeline: true } as ReplicationOptions;

/** A v2-like source: scripted messages; what may be stored stays below `unconfirmedFrom`. */
class ScriptedSource implements Source {
  readonly api = 'v2';
  readonly origin = 'memory';
  liveBeforeSnapshot = false;
  snapshotRevision = 0;
  /** Resolves the snapshot read (reload). */
  snapshotTaken: Promise<void> = Promise.resolve();
  readonly out = new Channel<SourceMessage>(100);
  unconfirmedFrom = Number.POSITIVE_INFINITY;
  async currentRevision() {
    return 0;
  }
  async snapshot(signal?: AbortSignal) {
    // As a real read, it fails once the run is aborted.
    await Promise.race([this.snapshotTaken, new Promise((_r, reject) => signal?.addEventListener('abort', () => reject(new Error('This operation was aborted'))))]);
    return { revision: this.snapshotRevision, entries: [] };
  }
  changes(_from: number | 'now', signal: AbortSignal): AsyncIterable<SourceMessage> {
    signal.addEventListener('abort', () => this.out.end()); // as a real source's reader ends
    return this.out;
  }
  async keyAt() {
    return { entry: null };
  }
  storable(applied: number) {
    return Math.min(applied, this.unconfirmedFrom - 1);
  }
  async leaseRemaining() {
    return -1;
  }
  confirmedUpTo() {
    return null;
  }
  async close() {}
}

/** A 'separate'-checkpoint destination that applies each change at once and records what it did. */
class MemoryDestination implements Destination {
  readonly checkpointStyle = 'separate';
  readonly applied: number[] = [];
  readonly checkpoints: number[] = [];
  async readCheckpoint() {
    return this.checkpoints.at(-1) ?? null;
  }
  open(): DestinationRun {
    let hooks: WriterHooks;
    const dst = this;
    return {
      async resume() {},
      async reconcile() {
        return { written: 0, deleted: 0 };
      },
      start(_from, h) {
        hooks = h;
      },
      push(msg) {
        if (msg.kind === 'change') dst.applied.push(msg.change.revision);
        if (msg.kind === 'change' || msg.kind === 'progress') hooks.applied(msg.kind === 'change' ? msg.change.revision : msg.revision);
      },
      // Every hand-over waits a moment, as a busy writer makes it.
      waitForRoom: () => new Promise((r) => setTimeout(r, 1)),
      async barrier(run) {
        return run();
      },
      async idle() {},
      halt() {},
      async heal(): Promise<HealOutcome> {
        return new Map();
      },
      async writeCheckpoint(revision) {
        dst.checkpoints.push(revision);
      },
      status: () => ({ queue: 0, inFlight: 0, oldestUnappliedAt: null, ordering: 'strict' }),
      async close() {},
    };
  }
}

const change = (revision: number): SourceMessage => ({ kind: 'change', change: { revision, ops: [] } });
const until = async (what: () => boolean) => {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(what()).toBe(true);
};

function host(source: Source, dst: Destination) {
  const events: MirrorEvent[] = [];
  const h = new PipelineHost({ config, source, dst, log, metrics, sourceRevision: () => null });
  return { h, events, report: (e: MirrorEvent) => events.push(e) };
}

describe('pipeline', () => {
  it('hands changes over in order, stores the checkpoint at most every --checkpoint-ms, and once more on stop', async () => {
    const source = new ScriptedSource();
    const dst = new MemoryDestination();
    const { h, report } = host(source, dst);
    const stop = h.start({ mode: 'tail', appliedIndex: 10 }, report);
    for (const r of [11, 12, 14]) source.out.push(change(r));
    source.out.push({ kind: 'progress', revision: 20 });
    await until(() => dst.checkpoints.at(-1) === 20);
    expect(dst.applied).toEqual([11, 12, 14]);
    expect(dst.checkpoints.every((c, i) => i === 0 || c > dst.checkpoints[i - 1]!)).toBe(true);
    source.out.push(change(21));
    await until(() => dst.applied.includes(21));
    stop();
    await h.drain(2_000);
    expect(dst.checkpoints.at(-1)).toBe(21);
  });

  it('a contradicted quiet claim puts a stored checkpoint past it back below it before the fault is reported', async () => {
    const source = new ScriptedSource();
    const dst = new MemoryDestination();
    const { h, events, report } = host(source, dst);
    const stop = h.start({ mode: 'tail', appliedIndex: 0 }, report);
    source.out.push({ kind: 'progress', revision: 50 });
    await until(() => dst.checkpoints.at(-1) === 50);
    source.out.end(new ResyncNeededError('an event inside a quiet claim', 31));
    await until(() => events.some((e) => e.type === 'runner.fault'));
    expect(dst.checkpoints.at(-1)).toBe(30);
    stop();
    await h.drain(2_000);
    // Nothing above the claim is stored on stop either.
    expect(dst.checkpoints.at(-1)).toBe(30);
  });

  it('a source whose live stream starts below the stored index is another cluster: a fault, nothing written', async () => {
    const source = new ScriptedSource();
    const dst = new MemoryDestination();
    const { h, events, report } = host(source, dst);
    const stop = h.start({ mode: 'tail', appliedIndex: 100 }, report);
    source.out.push({ kind: 'live', revision: 40 });
    source.out.push(change(101));
    await until(() => events.some((e) => e.type === 'runner.fault'));
    const fault = events.find((e) => e.type === 'runner.fault') as Extract<MirrorEvent, { type: 'runner.fault' }>;
    expect(fault.fault.code).toBe('EM_ERR_SOURCE_HISTORY_MISMATCH');
    expect(dst.applied).toEqual([]);
    stop();
    await h.drain(2_000);
  });

  it('a reload registers the reader first; what it read before the snapshot is handed over after the reconcile, in order', async () => {
    const source = new ScriptedSource();
    source.liveBeforeSnapshot = true;
    source.snapshotRevision = 8;
    let take!: () => void;
    source.snapshotTaken = new Promise((r) => (take = r));
    const dst = new MemoryDestination();
    const { h, events, report } = host(source, dst);
    const stop = h.start({ mode: 'reload', appliedIndex: null }, (e) => {
      report(e);
      // More arrive while the held ones are handed over: they queue behind them.
      if (e.type === 'runner.reconciled') for (let r = 13; r <= 20; r++) source.out.push(change(r));
    });
    source.out.push({ kind: 'registered', revision: 5 });
    for (let r = 6; r <= 12; r++) source.out.push(change(r));
    await new Promise((r) => setTimeout(r, 20));
    take();
    await until(() => events.some((e) => e.type === 'runner.reconciled'));
    await until(() => dst.applied.at(-1) === 20);
    expect(dst.applied).toEqual([9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect(dst.checkpoints[0]).toBe(8);
    stop();
    await h.drain(2_000);
    expect(dst.checkpoints.at(-1)).toBe(20);
  });

  it('a reader that loses the history during a reload ends the run with that fault, not the reconcile it aborts', async () => {
    const source = new ScriptedSource();
    source.liveBeforeSnapshot = true;
    source.snapshotTaken = new Promise(() => {}); // a long snapshot read
    const dst = new MemoryDestination();
    const { h, events, report } = host(source, dst);
    const stop = h.start({ mode: 'recover', appliedIndex: null }, report);
    source.out.push({ kind: 'registered', revision: 5 });
    await new Promise((r) => setTimeout(r, 10));
    source.out.end(new EventIndexClearedError(401, 'The event in requested index is outdated and cleared', 'the requested history has been cleared [53/25]', 1052, 400));
    await until(() => events.some((e) => e.type === 'runner.fault'));
    const fault = events.find((e) => e.type === 'runner.fault') as Extract<MirrorEvent, { type: 'runner.fault' }>;
    expect(fault.fault).toMatchObject({ code: 'EM_ERR_EVENT_INDEX_CLEARED', historyLost: true });
    stop();
    await h.drain(2_000);
  });
});
