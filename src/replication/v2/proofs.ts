// Quiet-prefix proofs (see the top of poller.ts): probes that claim the indexes a silent watch shows to hold no
// prefix event, rearmed so that at most REARM_TARGET_EVENTS store indexes pass between two claims, and that tell
// a stalled stream by an event it does not deliver; and the re-verification of open claims after a lost
// connection. The claims themselves are kept by the pure sequencer.ts.
import type { EtcdClient, StreamHandle, WatchHandle } from '../../etcd/v2/client.js';
import type { BodyGaps } from './body-gaps.js';
import { realClock, type Clock } from './clock.js';
import type { Sequencer } from './sequencer.js';
import type { SourceBudget } from './source-budget.js';
import { bodyOf, linked, within } from './watch-calls.js';

/** What the proofs take of the poller's options (poller.ts PollerOptions, documented there). */
export interface ProofOptions {
  src: EtcdClient;
  prefix: string;
  sink: { sourceIndex(index: number): void };
  rearmMinMs?: number;
  rearmMaxMs?: number;
  unreachableAfterMs?: number;
  streamGraceMs?: number;
  budget?: SourceBudget;
  clock?: Clock;
}

/** How many store indexes may pass between two probes: far below the 1000-event window. */
const REARM_TARGET_EVENTS = 150;
/** While events flow, probes only check that the stream keeps up. */
const STALL_CHECK_MS = 1_000;

export async function probe(opts: ProofOptions, seq: Sequencer, gaps: BodyGaps, stream: StreamHandle, signal: AbortSignal): Promise<'stalled'> {
  const { src, prefix, sink } = opts;
  const clock = opts.clock ?? realClock;
  const rearmMin = opts.rearmMinMs ?? 15;
  const rearmMax = opts.rearmMaxMs ?? 100;
  const grace = opts.streamGraceMs ?? 2_000;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  let prev: { index: number; at: number } | null = null;
  let rearmMs = rearmMin;
  // The store's index rate and the last proof: the budget may hold a proof back only as far as the window allows.
  let storePerMs = 0;
  let lastProofAt = clock.now();
  for (;;) {
    await clock.sleep(rearmMs, signal);
    await opts.budget?.take('proof', signal, { storePerMs, sinceLastMs: clock.now() - lastProofAt });
    const waitIndex = seq.last + 1;
    const ctl = linked(signal);
    const handle = await within(src.watch(prefix, { waitIndex, recursive: true, signal: ctl.signal }), unreachableAfter, src, ctl, clock);
    sink.sourceIndex(handle.etcdIndex);
    const first = (await silent(handle, gaps, clock, signal)) ? 'silent' : await bodyOf(handle, true, unreachableAfter, src, ctl, clock);
    ctl.abort(); // past the stream's start, the stream itself delivers anything a delayed body would have
    ctl.dispose();
    if (first === 'silent') {
      seq.claim(waitIndex, handle.etcdIndex);
      const now = clock.now();
      if (prev && now > prev.at && handle.etcdIndex >= prev.index) storePerMs = (handle.etcdIndex - prev.index) / (now - prev.at);
      rearmMs = nextRearm(prev, handle.etcdIndex, now, rearmMin, rearmMax);
      prev = { index: handle.etcdIndex, at: now };
      lastProofAt = now;
      continue;
    }
    if (first !== null) {
      // The stream must bring this event (or has already): if it does not within the grace time, it stalled.
      const index = first.node.modifiedIndex;
      const deadline = clock.now() + grace;
      while (stream.lastIndex() < index && seq.last < index && clock.now() < deadline) await clock.sleep(20, signal);
      if (stream.lastIndex() < index && seq.last < index) return 'stalled';
    }
    rearmMs = STALL_CHECK_MS;
    prev = null;
  }
}

/**
 * True when no body byte arrived within the silence threshold after the headers. The verdict waits for one more
 * pass of the event loop's I/O phase, so that a busy process does not take bytes it has not read yet for
 * silence. Every history match (an event at or below the watch's X-Etcd-Index, written right behind the headers)
 * teaches `gaps` how long its body took, even one that arrives long after the verdict.
 */
export async function silent(handle: WatchHandle, gaps: BodyGaps, clock: Clock, signal: AbortSignal): Promise<boolean> {
  const headersAt = clock.now();
  let arrived = false;
  let firstByteAt = 0;
  void handle.firstByte.then(() => {
    arrived = true;
    firstByteAt = clock.now();
  });
  handle.event.then(
    (ev) => {
      if (ev && ev.node.modifiedIndex <= handle.etcdIndex) gaps.record(firstByteAt - headersAt);
    },
    () => {},
  );
  const first = await Promise.race([handle.firstByte.then(() => 'bytes' as const), clock.sleep(gaps.silenceMs(), signal).then(() => 'timer' as const)]);
  if (first === 'bytes') return false;
  await new Promise((resolve) => setImmediate(resolve));
  return !arrived;
}

/**
 * After a lost connection: a watch from the oldest unverified claim's start. Silent → the claims count again from
 * now; an event inside them → the contradiction; an event above them → they are proven.
 */
export async function reverify(opts: ProofOptions, seq: Sequencer, gaps: BodyGaps, signal: AbortSignal): Promise<void> {
  const open = seq.unverified();
  if (!open) return;
  const { src, prefix, sink } = opts;
  const clock = opts.clock ?? realClock;
  const unreachableAfter = opts.unreachableAfterMs ?? 5_000;
  const ctl = linked(signal);
  try {
    const handle = await within(src.watch(prefix, { waitIndex: open.from, recursive: true, signal: ctl.signal }), unreachableAfter, src, ctl, clock);
    sink.sourceIndex(handle.etcdIndex);
    if (await silent(handle, gaps, clock, ctl.signal)) {
      if (handle.etcdIndex >= open.to) seq.reverified(open.to);
      return;
    }
    const ev = await bodyOf(handle, true, unreachableAfter, src, ctl, clock);
    if (!ev) return; // asked again on the next connection
    seq.check(ev.node.modifiedIndex);
    seq.confirmBelow(ev.node.modifiedIndex, open.from - 1);
  } finally {
    ctl.abort();
    ctl.dispose();
  }
}

/** Re-arm often enough that at most REARM_TARGET_EVENTS store indexes pass between two proofs. */
function nextRearm(prev: { index: number; at: number } | null, index: number, at: number, min: number, max: number): number {
  if (!prev || at <= prev.at || index <= prev.index) return max;
  const perMs = (index - prev.index) / (at - prev.at);
  return Math.min(max, Math.max(min, REARM_TARGET_EVENTS / perMs));
}
