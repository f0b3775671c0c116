// The poller: long-polls the source from `waitIndex` and hands events to the writer in index order, without
// waiting for them to be applied (the source round trip overlaps destination writes).
//
// Quiet prefix. etcd registers a watch and reads X-Etcd-Index under one lock, and when the watch finds a match in
// history it writes that event right behind the headers. A watch that stays silent after its headers therefore
// shows that no prefix event exists up to its X-Etcd-Index — unless the event's bytes were merely delayed. So:
// - the live watch is never abandoned for being silent: it delivers the first prefix event at or after its
//   waitIndex, whenever that happens;
// - meanwhile a prober re-arms short watches from the last proven index and hands each silent one's X-Etcd-Index
//   to the writer as a marker, so the stored index follows the source even while the prefix is quiet and a
//   restart never asks for a cleared index;
// - if the live watch ever delivers an event at or below a proven index (a delayed body after all), the proof was
//   wrong and the poller asks for a resync from a snapshot instead of losing the event.
import { setTimeout as sleep } from 'node:timers/promises';
import { isAborted, type EtcdClient, type WatchHandle } from './etcd/client.js';
import type { EtcdEvent } from './etcd/decode.js';
import { isRetryable, MirrorError, TransportError, WatcherClearedError } from './etcd/errors.js';

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
  /** Last index already handed over (or applied); polling starts at +1. 'now': from the moment the first watch
   * is registered (its X-Etcd-Index), for a caller that covers everything before with a snapshot. */
  fromIndex: number | 'now';
  /** Called once the first live watch is registered, with its X-Etcd-Index. */
  registered?: (etcdIndex: number) => void;
  sink: PollerSink;
  signal: AbortSignal;
  /** Re-arm bounds for quiet probes, ms. */
  rearmMinMs?: number;
  rearmMaxMs?: number;
  /** A source that does not answer a watch within this long is reported as unreachable. */
  unreachableAfterMs?: number;
}

/** The live watch delivered an event that a quiet proof had ruled out: only a snapshot can tell what is true. */
export class ResyncNeededError extends MirrorError {
  override readonly code = 'EM_ERR_RESYNC_NEEDED';
}

/** How many store indexes may pass between two probes: far below the 1000-event window. */
const REARM_TARGET_EVENTS = 150;
/** Silence after the headers before a probe counts as blocked. */
const MIN_SILENCE_MS = 15;
/** A probe saw an event; the live watch must deliver it within this long or it is considered dead. */
const LIVE_GRACE_MS = 3_000;
/** Quick reconnects after a transport failure before it is reported: a cut must not cost seconds of backoff
 * while the rest of the store races through the history window. */
const QUICK_RETRIES = [50, 150, 400];

export async function runPoller(opts: PollerOptions): Promise<void> {
  const { src, prefix, sink, signal } = opts;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  let registered = opts.fromIndex !== 'now';
  const state = { last: opts.fromIndex === 'now' ? 0 : opts.fromIndex };
  let failures = 0;

  while (!signal.aborted) {
    await sink.room();
    if (signal.aborted) return;
    const live = linkedController(signal);
    const probing = linkedController(signal);
    try {
      const handle = await watchWithin(src, prefix, registered ? state.last + 1 : undefined, live.signal, unreachableAfter);
      failures = 0;
      if (!registered) {
        registered = true;
        state.last = handle.etcdIndex; // a watch without waitIndex covers exactly what comes after this index
        opts.registered?.(handle.etcdIndex);
      }
      sink.sourceIndex(handle.etcdIndex);
      const liveEvent = handle.event.then((ev) => ({ kind: 'live' as const, ev }));
      const prober = probeQuiet({ ...opts, unreachableAfterMs: unreachableAfter, state, first: handle, liveEvent, signal: probing.signal });
      const outcome = await Promise.race([liveEvent, prober]);
      probing.abort();
      await prober.catch(() => {});
      if (outcome.kind === 'stale') {
        live.abort(); // the probe saw an event the live watch never delivered: watch again from the last index
        continue;
      }
      if (outcome.ev === null) {
        sink.poll('empty'); // etcd ended the response without an event: re-poll the same index
        continue;
      }
      sink.poll('event');
      const index = outcome.ev.node.modifiedIndex;
      if (index <= state.last) {
        throw new ResyncNeededError(`the source delivered event ${index} after index ${state.last} had been proven quiet; resynchronising from a snapshot`);
      }
      state.last = index;
      sink.sourceIndex(Math.max(index, handle.etcdIndex));
      sink.event(outcome.ev);
    } catch (err) {
      live.abort();
      probing.abort();
      if (signal.aborted) return;
      if (isAborted(err)) continue;
      sink.poll('error');
      if (err instanceof WatcherClearedError) continue;
      const pause = isRetryable(err) ? QUICK_RETRIES[failures++] : undefined;
      if (pause === undefined) throw err;
      await sleep(pause, undefined, { signal }).catch(() => {});
    } finally {
      live.dispose();
      probing.dispose();
    }
  }
}

interface ProbeArgs extends PollerOptions {
  unreachableAfterMs: number;
  state: { last: number };
  first: WatchHandle;
  liveEvent: Promise<unknown>;
}

/**
 * Runs while the live watch waits. Resolves `{kind:'stale'}` only when the live watch looks dead; otherwise
 * it runs until aborted (rejecting with the abort or with a transport fault of its own).
 */
async function probeQuiet(a: ProbeArgs): Promise<{ kind: 'stale' }> {
  const { src, prefix, sink, signal, state } = a;
  const rearmMin = a.rearmMinMs ?? 30;
  const rearmMax = a.rearmMaxMs ?? 100;
  const claim = (index: number) => {
    sink.poll('quiet');
    if (index > state.last) {
      state.last = index;
      sink.quiet(index);
    }
  };
  // The live watch's own headers are the first proof.
  await sleep(MIN_SILENCE_MS, undefined, { signal });
  claim(a.first.etcdIndex);
  let prev = { index: a.first.etcdIndex, at: Date.now() };
  let rearmMs = rearmMax;
  for (;;) {
    await sleep(rearmMs, undefined, { signal });
    const probe = linkedController(signal);
    try {
      const handle = await watchWithin(src, prefix, state.last + 1, probe.signal, a.unreachableAfterMs);
      sink.sourceIndex(handle.etcdIndex);
      const outcome = await Promise.race([handle.event, sleep(MIN_SILENCE_MS, 'silent' as const, { signal })]);
      if (outcome === 'silent') {
        claim(handle.etcdIndex);
        const now = Date.now();
        rearmMs = nextRearm(prev, handle.etcdIndex, now, rearmMin, rearmMax);
        prev = { index: handle.etcdIndex, at: now };
        continue;
      }
      // The probe found an event (or an empty answer): the live watch delivers it. Stop proving; if it never does,
      // the live connection is dead without having said so.
      await sleep(LIVE_GRACE_MS, undefined, { signal });
      return { kind: 'stale' };
    } finally {
      probe.abort();
      probe.dispose();
    }
  }
}

async function watchWithin(src: EtcdClient, prefix: string, waitIndex: number | undefined, signal: AbortSignal, ms: number): Promise<WatchHandle> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), ms);
  const both = AbortSignal.any([signal, timeout.signal]);
  try {
    return await src.watch(prefix, { waitIndex, recursive: true, signal: both });
  } catch (err) {
    if (timeout.signal.aborted && !signal.aborted) throw new TransportError(`${src.origin}: a watch got no answer within ${ms} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** An AbortController that also aborts when `parent` does; dispose() unhooks it. */
function linkedController(parent: AbortSignal): AbortController & { dispose(): void } {
  const c = new AbortController() as AbortController & { dispose(): void };
  const onAbort = () => c.abort();
  parent.addEventListener('abort', onAbort, { once: true });
  if (parent.aborted) c.abort();
  c.dispose = () => parent.removeEventListener('abort', onAbort);
  return c;
}

/** Re-arm often enough that at most REARM_TARGET_EVENTS store indexes pass between two proofs. */
function nextRearm(prev: { index: number; at: number }, index: number, at: number, min: number, max: number): number {
  if (at <= prev.at || index <= prev.index) return max;
  const perMs = (index - prev.index) / (at - prev.at);
  return Math.min(max, Math.max(min, REARM_TARGET_EVENTS / perMs));
}
