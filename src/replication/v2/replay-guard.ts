// A restart resumes from the stored index, which trails what was applied by up to one checkpoint interval, so
// the first events it hands over may already be on the destination. Re-applying them in order would move keys
// back in time for a moment (a pointer back to older data, a value that was already overwritten). Instead, the
// runner holds back what the source delivers up to its store index at the restart, reads the destination's
// copies of the keys those events touch, and skips, per key, the events the destination provably already shows.
//
// Why it is safe in every --ordering mode: all of them apply the events of one key in source order. So a key's
// copy shows the outcome of its last applied event, and once the copy shows the outcome of event j — a state the
// key had at no earlier point of the window, nor right before it — every event of that key up to j was applied.
// With values that repeat, the first such event is taken: a later repeat may then be replayed once more (as
// before), but nothing is skipped that was not applied.
//
// Subtree operations (a directory's creation or recursive removal, the whole root) change keys without naming
// them: with one of them in the window, every event is replayed as before.
import type { EtcdClient } from '../../etcd/v2/client.js';
import { KeyNotFoundError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';

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
  // Per key: the outcomes seen so far (the state before the first event included), and the event proven applied.
  const seen = new Map<string, Set<string | null>>();
  const proven = new Map<string, number>();
  for (const item of items) {
    if (item.kind !== 'put' && item.kind !== 'delete') continue;
    const key = item.key!;
    if (!dst.has(key) || proven.has(key)) continue;
    let states = seen.get(key);
    if (!states) seen.set(key, (states = new Set([item.before ?? null])));
    const outcome = item.kind === 'put' ? item.value! : null;
    // The copy shows this outcome, and the key showed it at no earlier point: this event was applied.
    if (dst.get(key) === outcome && !states.has(outcome)) proven.set(key, item.index);
    states.add(outcome);
  }
  const skip = new Set<number>();
  for (const item of items) {
    if (item.kind !== 'put' && item.kind !== 'delete') continue;
    const through = proven.get(item.key!);
    if (through !== undefined && item.index <= through) skip.add(item.index);
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
