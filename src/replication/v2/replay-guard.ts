// A restart resumes from the stored index, which trails what was applied by up to one checkpoint interval, so
// the first events it hands over may already be on the destination. Re-applying them in order would move keys
// back in time for a moment (a pointer back to older data, a value that was already overwritten). Instead, the
// runner holds back what the source delivers up to its store index at the restart, reads the destination's
// copies of the keys those events touch, and skips, per key, the events the destination provably already shows.
//
// Why it is safe in every --ordering mode: all of them apply the events of one key in source order. So a key's
// copy shows the outcome of its last applied event, and once the copy shows the outcome of event j — a state the
// key had at no earlier point of the window, nor right before it — every event of that key up to j was applied.
// With values that repeat (a key deleted twice, a flag toggled back), the copy fits several points of its key's
// events: the other keys decide. Strict order applies a prefix of the window, so the keys whose copy fits one
// point bound how far it got, and the repeating key's point inside that bound is taken. Where they do not decide
// (writes overlapped), the first point is taken: a later repeat may then be replayed once more (moving the key
// back for a moment), but nothing is skipped that was not applied.
//
// Subtree operations (a directory's creation or recursive removal, the whole root) change keys without naming
// them: with one of them in the window, every event is replayed as before.
import type { EtcdClient } from '../../etcd/v2/client.js';
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { KeyNotFoundError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';
import type { Log } from '../ports.js';
import { leafOf, planEvent } from './apply.js';

/** One replayed event, as it affects the destination. */
export interface ReplayItem {
  index: number;
  /** Destination key; absent for markers (nothing to write). */
  key?: string;
  /** 'put' writes `value`; 'delete' removes one key; 'subtree' is anything else. */
  kind?: 'put' | 'delete' | 'subtree';
  value?: string;
  /** The key's value right before this event on the source (from prevNode): null when it did not exist. */
  before?: string | null;
}

/**
 * What arrives up to the source's store index at the start (the window), and behind it until the destination has
 * been read, held back. The destination asks it when to release, and hands what it held to the writer.
 */
export class ReplayHold<T extends { index: number }> {
  /** The source's store index at the start (null: not known yet). */
  upTo: number | null = null;
  readonly #items: T[] = [];
  #releasing = false;

  /** The source's store index at the start, once; true when the window is complete already (nothing after `from`). */
  live(revision: number, from: number): boolean {
    if (this.upTo !== null) return false;
    this.upTo = revision;
    return revision <= from;
  }

  /** Holds an item; true when it completes the window. */
  hold(item: T): boolean {
    this.#items.push(item);
    return this.upTo !== null && item.index >= this.upTo;
  }

  /** Begins the release: false when it has begun already. */
  begin(): boolean {
    if (this.#releasing) return false;
    this.#releasing = true;
    return true;
  }

  /** The held items of the window. */
  window(): T[] {
    const upTo = this.upTo ?? Number.POSITIVE_INFINITY;
    const out: T[] = [];
    for (const item of this.#items) {
      if (item.index > upTo) break;
      out.push(item);
    }
    return out;
  }

  /** Everything held, in index order. */
  get items(): readonly T[] {
    return this.#items;
  }
}

/** A replayed source event as it affects the destination (its index alone when it writes nothing there). */
export function replayItemOf(ev: EtcdEvent, map: KeyMap, nowMs: number): ReplayItem {
  const index = ev.node.modifiedIndex;
  const scope = map.scope(ev.node.key, ev.node.dir === true, ev.action);
  if (scope !== 'mirrored' && scope !== 'ancestor') return { index };
  const op = planEvent(ev, map, nowMs, scope);
  if (!op) return { index };
  const leaf = leafOf(ev, op);
  if (leaf?.op.kind === 'put') return { index, key: leaf.op.key, kind: 'put', value: leaf.op.value, before: leaf.before };
  if (leaf) return { index, key: leaf.op.key, kind: 'delete', before: leaf.before };
  return { index, key: op.kind === 'clearRoot' ? map.dstRoot : op.key, kind: 'subtree' };
}

/** The indexes of the window's events the destination provably shows; none when it could not be read. */
export async function skipsFor(dst: EtcdClient, window: readonly ReplayItem[], signal: AbortSignal, log: Log): Promise<Set<number>> {
  const keys = keysToRead(window);
  if (!keys || keys.length === 0) return new Set();
  try {
    return alreadyApplied(window, await readCopies(dst, keys, signal));
  } catch (err) {
    if (!signal.aborted) log.warn({ err }, 'could not read the destination before the replay; replaying everything');
    return new Set();
  }
}

/** The destination's copy of a key: its value, or null when it does not exist. Directories are left out. */
export type DestinationState = Map<string, string | null>;

/** The keys whose destination state decides the skips, or null when the window holds a subtree operation. */
export function keysToRead(items: readonly ReplayItem[]): string[] | null {
  const keys = new Set<string>();
  for (const item of items) {
    if (item.kind === undefined) continue;
    if (item.kind === 'subtree') return null;
    keys.add(item.key!);
  }
  return [...keys];
}

/** Indexes of the events the destination provably already shows (to be skipped). */
export function alreadyApplied(items: readonly ReplayItem[], dst: DestinationState): Set<number> {
  // Per key, its events in the window and where the copy's state fits: after event p (p = 0: before the first).
  const events = new Map<string, ReplayItem[]>();
  for (const item of items) {
    if ((item.kind !== 'put' && item.kind !== 'delete') || !dst.has(item.key!)) continue;
    const list = events.get(item.key!);
    if (list) list.push(item);
    else events.set(item.key!, [item]);
  }
  const candidates = new Map<string, number[]>();
  for (const [key, list] of events) {
    const copy = dst.get(key);
    const fits: number[] = (list[0]!.before ?? null) === copy ? [0] : [];
    list.forEach((item, i) => {
      if ((item.kind === 'put' ? item.value! : null) === copy) fits.push(i + 1);
    });
    candidates.set(key, fits);
  }
  // Where a value repeats, the copy fits several points. The keys it fits once say how far a strict-order run got:
  // everything up to some index J, nothing after. A point of a repeating key is taken when it alone agrees with J.
  const span = (list: readonly ReplayItem[], p: number): [number, number] => [p === 0 ? Number.NEGATIVE_INFINITY : list[p - 1]!.index, p === list.length ? Number.POSITIVE_INFINITY : list[p]!.index];
  let lo = Number.NEGATIVE_INFINITY;
  let hi = Number.POSITIVE_INFINITY;
  for (const [key, fits] of candidates) {
    if (fits.length !== 1) continue;
    const [from, to] = span(events.get(key)!, fits[0]!);
    lo = Math.max(lo, from);
    hi = Math.min(hi, to);
  }
  const skip = new Set<number>();
  for (const [key, fits] of candidates) {
    if (fits.length === 0) continue;
    const list = events.get(key)!;
    let through = fits[0]!;
    if (fits.length > 1 && lo < hi) {
      // One strict run explains every key: the point that agrees with it. Otherwise (writes overlapped, or the run
      // does not narrow it down) the first point: a later repeat may then be replayed once more, but nothing is
      // skipped that was not applied.
      const agree = fits.filter((p) => {
        const [from, to] = span(list, p);
        return from < hi && to > lo;
      });
      if (agree.length === 1) through = agree[0]!;
    }
    for (let i = 0; i < through; i++) skip.add(list[i]!.index);
  }
  return skip;
}

/** A destination watch that stays silent this long after its headers found nothing in history. */
const CLEAN_STOP_SILENCE_MS = 50;

/**
 * Whether the last write to the destination subtree was the stored index (a clean stop, or the reference tool's
 * data-then-index loop): then nothing after it was applied and nothing needs holding back. A watch from just
 * after the index write answers at once from the destination's history if anything changed in the subtree since;
 * a local destination writes that answer right behind the headers. Any doubt (an answer, an error, history
 * already gone) means "hold back".
 */
export async function stoppedCleanly(dst: EtcdClient, map: KeyMap, signal: AbortSignal): Promise<boolean> {
  const ctl = new AbortController();
  const stop = () => ctl.abort();
  signal.addEventListener('abort', stop, { once: true });
  try {
    const written = (await dst.get(map.indexKey, { signal: ctl.signal })).body.node.modifiedIndex;
    const handle = await dst.watch(map.dstRoot, { waitIndex: written + 1, recursive: true, signal: ctl.signal });
    const first = await Promise.race([
      handle.firstByte.then(() => 'changed' as const),
      new Promise<'silent'>((resolve) => setTimeout(() => resolve('silent'), CLEAN_STOP_SILENCE_MS).unref()),
    ]);
    return first === 'silent';
  } catch {
    return false;
  } finally {
    ctl.abort();
    signal.removeEventListener('abort', stop);
  }
}

/** The destination's values of `keys` (null: absent; directories left out), 16 reads at a time. */
export async function readCopies(dst: EtcdClient, keys: string[], signal: AbortSignal): Promise<DestinationState> {
  const state: DestinationState = new Map();
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const key = keys[next++]!;
      signal.throwIfAborted();
      try {
        const node = (await dst.get(key, { signal })).body.node;
        if (!node.dir) state.set(key, node.value ?? '');
      } catch (err) {
        if (err instanceof KeyNotFoundError) state.set(key, null);
        else throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(16, keys.length) }, worker));
  return state;
}
