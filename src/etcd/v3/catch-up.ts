// A watch from an old revision, caught up in parallel slices and handed over in strict revision order.
//
// etcd 3.4 serves a watch that starts below the store revision from its "unsynced" group: every 100 ms
// (syncWatchersLoop) it reads the history from the lowest start among up to 512 such watchers (maxWatchersPerSync)
// and hands each of them at most 1,000 revisions of its own events (watchBatchMaxRevs). One watch therefore catches
// up at ~10,000 of its revisions/s however fast the reader is. Several watches on the same range, each starting
// where the one before would stop, each receive their own 1,000 revisions in the same round: a 10,000-revision
// backlog arrives in about one round instead of ten.
//
// The first watch's first batch tells whether slicing pays, how wide a slice is and where the backlog ends (its
// header revision): a batch cut at 1,000 revisions covers so many store revisions (a prefix that takes a share of the store's writes spreads its events wider);
// a batch that was not cut already holds the whole backlog, and that watch simply goes on. Each further slice
// [start, end) is a watch of its own, read as soon as it is open (so that it can be cancelled at its end instead of
// streaming the rest of the history again) and handed over only when every slice before it was. The last slice is
// an ordinary watch without an end: the one that stays once the backlog is replayed. A failure of a slice (a
// compacted start revision included) surfaces when the slices before it are handed over, so the reader sees the
// same events and the same error, at the same point, as from one watch. A slice that stays silent (its range held
// none of the prefix's events, which etcd does not say) ends the slicing: the rest is one watch from there.
import type { V3Watch, WatchMessage } from './types.js';

export interface CatchUpPlan {
  /** First revision to deliver. */
  from: number;
  /** Slices open at once (each buffers at most one batch of events). */
  parallel?: number;
  /** A slice that delivers nothing for this long makes the rest one watch again. */
  stallMs?: number;
}

/** Slices [start, end) of `width` store revisions from `from`; the last one, which reaches past `head`, has no end. */
export function planSlices(from: number, head: number, width: number): Array<{ start: number; end: number }> {
  const slices: Array<{ start: number; end: number }> = [];
  let start = from;
  while (head + 1 - start > width) {
    slices.push({ start, end: start + width });
    start += width;
  }
  slices.push({ start, end: Number.POSITIVE_INFINITY });
  return slices;
}

/**
 * The part of one slice's message that belongs to it: events below `end`, and whether the slice is complete (it
 * delivered an event at `end` or later, or a response proving nothing more below `end`).
 */
export function cutAtEnd(msg: WatchMessage, end: number): { events: WatchMessage | null; complete: boolean } {
  if (msg.kind !== 'events') return { events: null, complete: false };
  let i = msg.events.length;
  while (i > 0 && msg.events[i - 1]!.kv.modRevision >= end) i--;
  const complete = i < msg.events.length || msg.through >= end - 1;
  if (i === 0) return { events: null, complete };
  if (i === msg.events.length) return { events: msg, complete };
  const events = msg.events.slice(0, i);
  return { events: { kind: 'events', revision: msg.revision, events, through: events[events.length - 1]!.kv.modRevision, receivedAt: msg.receivedAt }, complete };
}

interface Slice {
  start: number;
  end: number;
  watch: V3Watch | null;
  buffer: WatchMessage[];
  complete: boolean;
  failure: unknown;
  /** Last revision this slice handed over (start - 1 before any). */
  delivered: number;
  wake: (() => void) | undefined;
}

/**
 * `open(startRevision, last)` opens one watch; `last` marks a watch that may stay (the only kind that needs
 * progress notifications). The result iterates as one watch from `plan.from`.
 */
export function catchUpWatch(open: (startRevision: number, last: boolean) => V3Watch, plan: CatchUpPlan): V3Watch {
  const parallel = Math.max(1, plan.parallel ?? 10);
  const stallMs = plan.stallMs ?? 1_000;
  let slices: Slice[] = [];
  let closed = false;
  /** The watch that stays: the first one until slices are planned, then the last slice. */
  let tail: V3Watch | null = null;
  let closeWake: (() => void) | undefined;

  const pump = async (slice: Slice): Promise<void> => {
    try {
      for await (const msg of slice.watch!) {
        const { events, complete } = cutAtEnd(msg, slice.end);
        if (events) slice.buffer.push(events);
        if (complete) {
          slice.complete = true;
          break;
        }
        if (events) slice.wake?.();
      }
    } catch (err) {
      slice.failure = err;
    } finally {
      // Ends the iteration (a closed watch ends without error) and cancels the stream at the slice's end.
      slice.watch!.close();
      slice.complete ||= slice.failure === undefined && closed;
      slice.wake?.();
    }
  };
  const openUpTo = (i: number) => {
    for (let j = i; j < Math.min(slices.length, i + parallel); j++) {
      const s = slices[j]!;
      if (s.watch || closed) continue;
      const last = j === slices.length - 1;
      s.watch = open(s.start, last);
      if (last) tail = s.watch;
      else void pump(s);
    }
  };
  const closeAll = () => {
    for (const s of slices) s.watch?.close();
    tail?.close();
  };

  async function* iterate(): AsyncGenerator<WatchMessage, void, undefined> {
    try {
      const first = open(plan.from, true);
      tail = first;
      const firstIterator = first[Symbol.asyncIterator]();
      const rest = { [Symbol.asyncIterator]: () => firstIterator };
      const head = await firstIterator.next();
      if (head.done || closed) return;
      const batch = head.value;
      yield batch;
      // Not a batch cut at etcd's limit (or already at the head): this watch holds the backlog and stays.
      if (batch.kind !== 'events' || batch.through >= batch.revision) {
        yield* rest;
        return;
      }
      first.close();
      const width = Math.max(1, batch.through - plan.from + 1);
      // The batch's header is the store revision when it was read: the backlog to slice ends there.
      slices = planSlices(batch.through + 1, batch.revision, width).map((s) => ({ ...s, watch: null, buffer: [], complete: false, failure: undefined, delivered: s.start - 1, wake: undefined }));
      tail = null;
      for (let i = 0; i < slices.length && !closed; i++) {
        openUpTo(i);
        const slice = slices[i]!;
        if (slice.end === Number.POSITIVE_INFINITY) {
          yield* slice.watch!;
          return;
        }
        for (;;) {
          if (closed) return;
          const msg = slice.buffer.shift();
          if (msg) {
            if (msg.kind === 'events') slice.delivered = msg.events[msg.events.length - 1]!.kv.modRevision;
            yield msg;
            continue;
          }
          if (slice.failure !== undefined) throw slice.failure;
          if (slice.complete) break;
          const arrived = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), stallMs);
            slice.wake = closeWake = () => {
              clearTimeout(timer);
              resolve(true);
            };
          });
          slice.wake = closeWake = undefined;
          if (arrived || slice.buffer.length > 0 || slice.complete || slice.failure !== undefined) continue;
          // Nothing for a while: the slice's range may hold none of the prefix's events (a slice learns its end
          // only from an event at or past it). The rest is one watch from here, as without slices.
          const from = slice.delivered + 1;
          closeAll();
          tail = open(from, true);
          yield* tail;
          return;
        }
        slice.watch?.close();
        slice.buffer = [];
      }
    } finally {
      closed = true;
      closeAll();
    }
  }

  const generator = iterate();
  return {
    [Symbol.asyncIterator]: () => generator,
    requestProgress: () => tail?.requestProgress(),
    close: () => {
      if (closed) return;
      closed = true;
      closeAll();
      closeWake?.();
    },
  };
}
