// The poller: reads the source's events in index order and hands them to the writer without waiting for them to
// be applied (the source round trip overlaps destination writes).
//
// Live events come from a stream watch registered "from now" (never from a past index: that delivers one event
// and then silence, notes 3.2). Whatever happened between the last handed-over index and the stream's start is
// read from etcd's history with many long-polls in flight at consecutive waitIndexes (one round trip per batch,
// not per event), deduplicated and released in index order.
//
// Quiet prefix. etcd registers a watch and reads X-Etcd-Index under one lock, and when the watch finds a match in
// history it writes that event right behind the headers. So a watch that stays silent after its headers shows
// that no prefix event exists up to its X-Etcd-Index — unless the event's bytes were merely delayed. Probes hand
// such indexes to the writer as markers (the stored index follows the source even while the prefix is quiet), and
// every claimed range is remembered: if any watch or the stream later delivers an event inside one, the claim was
// wrong and the poller asks for a resync from a snapshot instead of losing the event. A probe that sees an event
// the stream does not deliver within a grace time reveals a stalled stream (etcd drops slow stream readers
// silently, 3.4): the stream is replaced and history fills the gap.
//
// Proofs before persistence. A claim is only a guess until nothing can contradict it any more, so the sink is
// told separately up to where claims are confirmed (`confirmed`), and only that may be stored as the replication
// index. A claim is confirmed
// - positively, when the stream (registered below the claim, so it carries every prefix event above its start, in
//   order on one connection) or the claim's own guard watch delivers an event above it: any event inside the
//   claim would have come first; or
// - after `confirmMs` of silence while the connection that would carry a contradiction is alive. etcd writes a
//   history match microseconds after the headers; what delays it is descheduling or TCP retransmission, so the
//   wait adapts to the largest header-to-body gap seen recently (8 times it, 100 ms to 2 s) — but it never lets
//   more than 120 store indexes pass while the rest of the store races, since falling out of the window is a
//   certain cost and a late body after that long a rare one (and a contradiction still puts the stored index back).
// When a connection is lost, its pending claims are re-verified by a watch from the oldest one's start before
// any is confirmed. A contradiction stops all confirmation and names the claim, so the runner can put the stored
// index back below it.
//
// This file holds the reading (history and the stream); the probes and the re-verification are proofs.ts, the
// claim bookkeeping sequencer.ts and the gap measure body-gaps.ts (both pure, driven by an injected clock).
import { setMaxListeners } from 'node:events';
import { isAborted, type EtcdClient, type StreamHandle, type WatchHandle } from '../../etcd/v2/client.js';
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { isRetryable, ResyncNeededError, UnreachableError, WatcherClearedError } from '../../etcd/errors.js';
import { BodyGaps, SILENCE_MS } from './body-gaps.js';
import { realClock, type Clock } from './clock.js';
import { Sequencer } from './sequencer.js';
import { probe, reverify, silent } from './proofs.js';
import { bodyOf, linked, untilAborted, within, type Linked } from './watch-calls.js';
import type { SourceBudget } from './source-budget.js';

export interface PollerSink {
  /** An event with modifiedIndex > every index handed over before. */
  event(ev: EtcdEvent): void;
  /** Proof that nothing in the prefix happened up to `index` (a claim: it may still be contradicted). */
  quiet(index: number): void;
  /** Every claim up to `index` is confirmed: an index up to here may be stored. Never decreases. */
  confirmed?(index: number): void;
  /** Latest source store index seen. */
  sourceIndex(index: number): void;
  /** Resolves when the writer has room for more. */
  room(): Promise<void>;
  poll(outcome: 'event' | 'quiet' | 'empty' | 'error' | 'stalled'): void;
}

export interface PollerOptions {
  src: EtcdClient;
  prefix: string;
  /** Last index already handed over (or applied); reading starts at +1. 'now': from the moment the first watch
   * is registered (its X-Etcd-Index), for a caller that covers everything before with a snapshot. */
  fromIndex: number | 'now';
  /** Called once the first watch is registered, with its X-Etcd-Index. */
  registered?: (etcdIndex: number) => void;
  /** Called whenever a stream watch is registered, with its X-Etcd-Index (everything up to it comes from history). */
  streamStarted?: (etcdIndex: number) => void;
  sink: PollerSink;
  signal: AbortSignal;
  /**
   * false: the reference tool's way, one long-poll per event and no quiet proofs (the bench's baseline).
   * @default true
   */
  pipeline?: boolean;
  /** Long-polls in flight while catching up through history (one event each: a round trip per 64 events). @default 64 */
  parallel?: number;
  /** Re-arm bounds for quiet probes, ms. */
  rearmMinMs?: number;
  rearmMaxMs?: number;
  /** A source that does not answer a watch within this long is reported as unreachable. */
  unreachableAfterMs?: number;
  /** How long the stream may lag behind an event a probe saw before it counts as stalled. @default 2000 */
  streamGraceMs?: number;
  /** Header-to-body gaps seen so far; kept by the caller across pollers so that a lesson is not forgotten. */
  gaps?: BodyGaps;
  /** An expensive source's request budget: quiet proofs wait for slots, catch-up holds fewer long-polls. */
  budget?: SourceBudget;
  /** Time for every wait and timer. @default realClock */
  clock?: Clock;
}

/** Quick reconnects after a transport failure before it is reported: a cut must not cost seconds of backoff
 * while the rest of the store races through the history window. */
const QUICK_RETRIES = [0, 100, 400];
/** How long a silent catch-up watch stays open after its range was claimed, in case a history match was only
 * delayed (TCP retransmits take a few hundred ms). Later ranges are covered by the stream itself. */
const GUARD_MS = 5_000;

type Outcome = { kind: 'event'; ev: EtcdEvent } | { kind: 'empty' } | { kind: 'silent'; etcdIndex: number; handle: WatchHandle; ctl: Linked };

/** Keeps a silent watch open for a while after its range was claimed: whatever it delivers must not contradict. */
function guard(seq: Sequencer, outcome: Extract<Outcome, { kind: 'silent' }>, from: number, clock: Clock): void {
  const cancel = clock.after(GUARD_MS, () => outcome.ctl.abort());
  outcome.handle.event.then(
    (ev) => {
      if (!ev) return;
      seq.check(ev.node.modifiedIndex);
      // The watch returns the first prefix event at or after its waitIndex: none lies below this one.
      seq.confirmBelow(ev.node.modifiedIndex, from - 1);
    },
    () => {},
  ).finally(() => {
    cancel();
    outcome.ctl.abort();
    outcome.ctl.dispose();
  });
}

export async function runPoller(opts: PollerOptions): Promise<void> {
  setMaxListeners(0, opts.signal); // one listener per watch in flight (up to `parallel` plus guards)
  let registered = opts.fromIndex !== 'now';
  const clock = opts.clock ?? realClock;
  const gaps = opts.gaps ?? new BodyGaps(clock);
  const seq = new Sequencer(opts.fromIndex === 'now' ? 0 : opts.fromIndex, opts.sink, gaps, clock);
  const failedByClaim = seq.failed();
  failedByClaim.catch(() => {});
  const stopConfirming = clock.every(20, () => seq.tick());
  // Claims left unverified by a lost connection are re-verified beside the new connection, never in its way: a
  // reconnect must not wait a round trip while the rest of the store races through the window.
  let verifying = false;
  const stopVerifier = clock.every(50, () => {
    if (verifying || !seq.unverified() || opts.signal.aborted) return;
    verifying = true;
    reverify(opts, seq, gaps, opts.signal)
      .catch(() => {}) // asked again at the next interval
      .finally(() => (verifying = false));
  });
  try {
    await pollLoop(opts, seq, gaps, failedByClaim, () => registered, (etcdIndex) => {
      registered = true;
      seq.startAt(etcdIndex);
      opts.registered?.(etcdIndex);
    });
  } finally {
    stopConfirming();
    stopVerifier();
  }
}

async function pollLoop(
  opts: PollerOptions,
  seq: Sequencer,
  gaps: BodyGaps,
  failedByClaim: Promise<never>,
  isRegistered: () => boolean,
  register: (etcdIndex: number) => void,
): Promise<void> {
  const { src, prefix, sink, signal } = opts;
  const clock = opts.clock ?? realClock;
  const pipeline = opts.pipeline ?? true;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  // Quick retries are counted until the poller makes progress again: a source that accepts every watch and then
  // drops it must still be reported.
  let failures = 0;
  let lastAtFailure = -1;
  const onRegistered = (etcdIndex: number) => {
    if (!isRegistered()) register(etcdIndex);
  };

  while (!signal.aborted) {
    const conn = linked(signal);
    setMaxListeners(0, conn.signal);
    try {
      if (!pipeline) {
        if (!isRegistered()) onRegistered((await src.get('/')).etcdIndex);
        await Promise.race([catchUp(opts, seq, gaps, Infinity, false, conn.signal), failedByClaim]);
        continue;
      }
      const streamCtl = linked(conn.signal);
      const stream = await within(src.stream(prefix, { recursive: true, signal: streamCtl.signal }), unreachableAfter, src, streamCtl, clock);
      onRegistered(stream.etcdIndex);
      opts.streamStarted?.(stream.etcdIndex);
      sink.sourceIndex(stream.etcdIndex);
      await Promise.race([catchUp(opts, seq, gaps, stream.etcdIndex, true, conn.signal), failedByClaim]);
      const ended = await Promise.race([follow(opts, seq, gaps, stream, streamCtl, conn.signal), failedByClaim]);
      if (ended === 'stalled') {
        sink.poll('stalled');
        seq.connectionLost(); // the stalled stream carried the probes' contradictions
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ResyncNeededError) throw err;
      seq.connectionLost();
      if (isAborted(err) || isAbortError(err)) continue;
      sink.poll('error');
      if (seq.last > lastAtFailure) failures = 0;
      lastAtFailure = seq.last;
      // A link that gives no answer at all is reported at once (the machine backs off); a refused or reset
      // connection is retried quickly, since a cut must not cost seconds while the store races on.
      const quick = isRetryable(err) && !(err instanceof UnreachableError);
      const pause = err instanceof WatcherClearedError ? QUICK_RETRIES[0] : quick ? QUICK_RETRIES[failures++] : undefined;
      if (pause === undefined) throw err;
      await clock.sleep(pause, signal).catch(() => {});
    } finally {
      conn.abort();
      conn.dispose();
    }
  }
}

/**
 * Reads history from seq.last + 1 up to `target` with up to `parallel` long-polls in flight at consecutive
 * waitIndexes. A blocked head watch is a quiet proof (when `claims`); without claims it simply waits.
 */
async function catchUp(
  opts: PollerOptions,
  seq: Sequencer,
  gaps: BodyGaps,
  target: number,
  claims: boolean,
  signal: AbortSignal,
): Promise<void> {
  const { src, prefix, sink } = opts;
  const clock = opts.clock ?? realClock;
  const configured = opts.parallel ?? 64;
  const parallel = claims ? Math.max(1, opts.budget?.catchUpParallel(configured) ?? configured) : 1;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  const inFlight = new Map<number, { ctl: AbortController; outcome: Promise<Outcome> }>();
  /** Indexes of events any catch-up watch has delivered: a silent head must not claim past one of them. */
  const delivered: number[] = [];
  const issue = (waitIndex: number) => {
    // A claimed watch outlives this catch-up as a guard, so it hangs off the poller's lifetime; the others stop
    // with the catch-up.
    const ctl = linked(opts.signal);
    const stop = () => ctl.abort();
    signal.addEventListener('abort', stop, { once: true });
    const outcome = (async (): Promise<Outcome> => {
      const handle = await within(src.watch(prefix, { waitIndex, recursive: true, signal: ctl.signal }), unreachableAfter, src, ctl, clock);
      sink.sourceIndex(handle.etcdIndex);
      const first = claims && (await silent(handle, gaps, clock, ctl.signal)) ? 'silent' : await bodyOf(handle, claims, unreachableAfter, src, ctl, clock);
      signal.removeEventListener('abort', stop);
      if (first === 'silent') return { kind: 'silent', etcdIndex: handle.etcdIndex, handle, ctl };
      ctl.dispose();
      if (first === null) return { kind: 'empty' };
      delivered.push(first.node.modifiedIndex);
      seq.check(first.node.modifiedIndex); // late answers too: nothing may land inside a claimed range
      return { kind: 'event', ev: first };
    })();
    outcome.catch(() => {
      signal.removeEventListener('abort', stop);
      ctl.dispose();
    });
    inFlight.set(waitIndex, { ctl, outcome });
  };
  try {
    while (seq.last < target) {
      await untilAborted(sink.room(), signal);
      const head = seq.last + 1;
      for (const [w, r] of inFlight) {
        if (w < head) {
          r.ctl.abort();
          inFlight.delete(w);
        }
      }
      for (let w = head; w <= Math.min(head + parallel - 1, target); w++) if (!inFlight.has(w)) issue(w);
      const r = inFlight.get(head)!;
      let outcome: Outcome;
      try {
        outcome = await r.outcome;
      } finally {
        inFlight.delete(head);
      }
      if (outcome.kind === 'empty') {
        sink.poll('empty');
        continue;
      }
      if (outcome.kind === 'event') {
        sink.poll('event');
        seq.release(outcome.ev);
        continue;
      }
      if (delivered.some((i) => i >= head && i <= outcome.etcdIndex)) {
        // Another watch already saw an event in this range: the head's silence was only a late body. Give the
        // body a little longer, then ask again.
        const ev = await within(outcome.handle.event, unreachableAfter, src, outcome.ctl, clock).catch(() => undefined);
        outcome.ctl.abort();
        outcome.ctl.dispose();
        if (ev) seq.release(ev);
        continue;
      }
      seq.claim(head, outcome.etcdIndex);
      guard(seq, outcome, head, clock);
      // A blocked head at or beyond the target means history holds nothing more up to it.
      if (outcome.etcdIndex < head) {
        // Registered below the waitIndex (store index not there yet): nothing proven, wait for it to move on.
        await clock.sleep(SILENCE_MS, signal);
      }
    }
  } finally {
    for (const r of inFlight.values()) r.ctl.abort();
  }
}


/**
 * Releases stream events in order while a probe re-arms from the last index: silent probes are quiet proofs;
 * a probe that sees an event the stream does not deliver in time means the stream stalled. Returns 'stalled'.
 */
async function follow(
  opts: PollerOptions,
  seq: Sequencer,
  gaps: BodyGaps,
  stream: StreamHandle,
  streamCtl: AbortController,
  signal: AbortSignal,
): Promise<'stalled'> {
  const { sink } = opts;
  const probing = linked(signal);
  // The probe ends the stream read when it finds the stream stalled, or fails itself. (Racing every event against
  // the long-lived probe promise instead would pile up one promise reaction per event.)
  let ended: { stalled: true } | { error: unknown } | null = null;
  probe(opts, seq, gaps, stream, probing.signal).then(
    () => {
      ended = { stalled: true };
      streamCtl.abort();
    },
    (error: unknown) => {
      if (probing.signal.aborted) return;
      ended = { error };
      streamCtl.abort();
    },
  );
  try {
    for (;;) {
      await untilAborted(sink.room(), signal);
      let next: EtcdEvent;
      try {
        next = await stream.next();
      } catch (err) {
        const why = ended as { stalled: true } | { error: unknown } | null;
        if (why && 'stalled' in why) return 'stalled';
        throw why ? why.error : err;
      }
      sink.poll('event');
      seq.release(next, stream.etcdIndex);
      sink.sourceIndex(next.node.modifiedIndex);
    }
  } finally {
    probing.abort();
    probing.dispose();
  }
}







const isAbortError = (err: unknown): boolean => err instanceof Error && err.name === 'AbortError';


