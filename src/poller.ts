// The poller: long-polls the source from `waitIndex` and hands events to the writer in index order, without
// waiting for them to be applied (the source round trip overlaps destination writes).
//
// Quiet prefix: etcd registers a watch and reads X-Etcd-Index under one lock, and writes a history match right
// behind the headers. So a watch whose headers arrived and whose body stayed silent for a while proves that no
// prefix event exists up to its X-Etcd-Index: the poller hands that index to the writer as a marker and re-arms
// from there, so the stored index keeps up with the source and a restart never asks for a cleared index.
import { isAborted, type EtcdClient } from './etcd/client.js';
import type { EtcdEvent } from './etcd/decode.js';
import { TransportError, WatcherClearedError } from './etcd/errors.js';

export interface PollerSink {
  /** An event with modifiedIndex > every index handed over before. */
  event(ev: EtcdEvent): void;
  /** Proof that nothing in the prefix happened up to `index`. */
  quiet(index: number): void;
  /** Latest source store index seen. */
  sourceIndex(index: number): void;
  /** Resolves when the writer has room for more. */
  room(): Promise<void>;
  poll(outcome: 'event' | 'quiet' | 'empty' | 'error'): void;
}

export interface PollerOptions {
  src: EtcdClient;
  prefix: string;
  /** Last index already handed over (or applied); polling starts at +1. */
  fromIndex: number;
  sink: PollerSink;
  signal: AbortSignal;
  /** Re-arm bounds for a quiet watch, ms. */
  rearmMinMs?: number;
  rearmMaxMs?: number;
  /** A source that does not answer for this long is reported as unreachable. */
  unreachableAfterMs?: number;
  now?: () => number;
}

/** How many store indexes may pass between two re-arms of a quiet watch: far below the 1000-event window. */
const REARM_TARGET_EVENTS = 150;
/** Silence after the headers before a watch counts as blocked. */
const MIN_SILENCE_MS = 30;

export async function runPoller(opts: PollerOptions): Promise<void> {
  const { src, prefix, sink, signal } = opts;
  const now = opts.now ?? Date.now;
  const rearmMin = opts.rearmMinMs ?? 50;
  const rearmMax = opts.rearmMaxMs ?? 100;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  let last = opts.fromIndex;
  let rearmMs = rearmMin;
  let prevHeader: { index: number; at: number } | null = null;

  while (!signal.aborted) {
    await sink.room();
    if (signal.aborted) return;
    const attempt = new AbortController();
    const onOuterAbort = () => attempt.abort();
    signal.addEventListener('abort', onOuterAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const expired = (ms: number) =>
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), ms);
      });
    try {
      const handle = await Promise.race([src.watch(prefix, { waitIndex: last + 1, recursive: true, signal: attempt.signal }), expired(unreachableAfter)]);
      clearTimeout(timer);
      if (handle === 'timeout') {
        attempt.abort();
        throw new TransportError(`${src.origin}: a watch got no answer within ${unreachableAfter} ms`);
      }
      sink.sourceIndex(handle.etcdIndex);
      const outcome = await Promise.race([handle.event, expired(Math.max(rearmMs, MIN_SILENCE_MS))]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        attempt.abort();
        sink.poll('quiet');
        if (handle.etcdIndex > last) {
          last = handle.etcdIndex;
          sink.quiet(last);
        }
        rearmMs = nextRearm(prevHeader, handle.etcdIndex, now(), rearmMin, rearmMax);
        prevHeader = { index: handle.etcdIndex, at: now() };
        continue;
      }
      if (outcome === null) {
        sink.poll('empty'); // etcd ended the response without an event: re-poll the same index
        continue;
      }
      sink.poll('event');
      const index = outcome.node.modifiedIndex;
      if (index <= last) continue; // duplicate (a stream or retry replayed it)
      last = index;
      sink.sourceIndex(Math.max(index, handle.etcdIndex));
      sink.event(outcome);
    } catch (err) {
      clearTimeout(timer);
      if (signal.aborted || isAborted(err)) {
        if (signal.aborted) return;
        continue;
      }
      sink.poll('error');
      if (err instanceof WatcherClearedError) continue;
      throw err;
    } finally {
      signal.removeEventListener('abort', onOuterAbort);
    }
  }
}

/** Re-arm often enough that at most REARM_TARGET_EVENTS store indexes pass between two proofs. */
function nextRearm(prev: { index: number; at: number } | null, index: number, at: number, min: number, max: number): number {
  if (!prev || at <= prev.at || index <= prev.index) return max;
  const perMs = (index - prev.index) / (at - prev.at);
  return Math.min(max, Math.max(min, REARM_TARGET_EVENTS / perMs));
}
