// Source event → idempotent destination operation. Source preconditions (prevValue, prevIndex, prevExist)
// are never replayed: the source already decided, and destination indexes differ. Applying any suffix of the
// event stream again, in order, converges to the same destination state.
import type { EtcdClient } from '../../etcd/v2/client.js';
import { REMOVAL_ACTIONS, WRITE_ACTIONS, type EtcdEvent, type EtcdNode } from '../../etcd/v2/decode.js';
import { KeyNotFoundError, NotADirectoryError, NotAFileError, RootReadOnlyError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';
import { copyTtl } from '../copy-ttl.js';
import { isWithin } from '../../etcd/v2/paths.js';

export type DstOp =
  /** Write a value; `ttl` in whole seconds (the copy's: copy-ttl.ts), absent for a permanent key. */
  | { kind: 'put'; key: string; value: string; ttl?: number }
  /** Make sure a directory exists with this TTL (`null`: no TTL). */
  | { kind: 'mkdir'; key: string; ttl: number | null }
  /** Remove a key or a whole subtree; "not found" is success. */
  | { kind: 'delete'; key: string }
  /** Everything the mirror owns on the destination goes (an ancestor of the source prefix was removed). */
  | { kind: 'clearRoot' };

/** An op on one key that is no directory: one request. */
export type LeafOp = Extract<DstOp, { kind: 'put' } | { kind: 'delete' }>;

/** Remaining whole seconds until `expiration`, from the leader's absolute clock; <= 0 means already expired. */
export function remainingTtl(expiration: string, nowMs: number): number {
  return Math.ceil((Date.parse(expiration) - nowMs) / 1000);
}


/** The destination operation for a mirrored event, or null for an action this mirror does not know. */
export function planEvent(event: EtcdEvent, map: KeyMap, nowMs: number, scope: 'mirrored' | 'ancestor'): DstOp | null {
  if (scope === 'ancestor') return { kind: 'clearRoot' };
  const key = map.toDst(event.node.key);
  if (REMOVAL_ACTIONS.has(event.action)) return key === map.dstRoot ? { kind: 'clearRoot' } : { kind: 'delete', key };
  if (!WRITE_ACTIONS.has(event.action)) return null;
  return planNode(event.node, key, nowMs);
}

/** Operation that makes destination `key` equal to the source node (used by events and by reconcile). A TTL copy
 * outlives the source's remaining time by the margin; the source's `expire` event, replayed, removes it. */
export function planNode(node: EtcdNode, key: string, nowMs: number): DstOp {
  const ttl = node.expiration !== undefined ? copyTtl(remainingTtl(node.expiration, nowMs)) : undefined;
  if (node.dir) return { kind: 'mkdir', key, ttl: ttl ?? null };
  return ttl === undefined ? { kind: 'put', key, value: node.value ?? '' } : { kind: 'put', key, value: node.value ?? '', ttl };
}

/**
 * The op of an event that writes or removes one key which is no directory before or after (one request: it may
 * go on the ordered lane, and a replay can tell from the key's value whether it was applied), with the key's
 * value right before the event (null: it did not exist). Null for anything else.
 */
export function leafOf(ev: EtcdEvent, op: DstOp): { op: LeafOp; before: string | null } | null {
  if (ev.node.dir === true || ev.prevNode?.dir === true || (op.kind !== 'put' && op.kind !== 'delete')) return null;
  return { op, before: ev.prevNode?.value ?? null };
}

/** The destination key an op touches, and whether it affects a whole subtree (then it orders against everything). */
export function opFootprint(op: DstOp, map: KeyMap): { key: string; subtree: boolean } {
  if (op.kind === 'clearRoot') return { key: map.dstRoot, subtree: true };
  return { key: op.key, subtree: op.kind !== 'put' };
}

export interface ApplyStats {
  /** Destination state that differed from what the event stream implies and was repaired. */
  onHealed?: (reason: string, key: string) => void;
}

/** Performs one op on the destination. Throws only what a retry or an operator must handle. */
export async function executeOp(dst: EtcdClient, op: DstOp, map: KeyMap, stats: ApplyStats = {}): Promise<void> {
  switch (op.kind) {
    case 'put':
      return putValue(dst, op, stats);
    case 'mkdir':
      return mkdir(dst, op, stats);
    case 'delete':
      return deleteTree(dst, op.key);
    case 'clearRoot':
      return clearRoot(dst, map);
  }
}

async function putValue(dst: EtcdClient, op: Extract<DstOp, { kind: 'put' }>, stats: ApplyStats, healed = 0): Promise<void> {
  try {
    await dst.put(op.key, { value: op.value, ttl: op.ttl });
  } catch (err) {
    if (healed > 2) throw err;
    if (err instanceof NotAFileError) {
      // A directory sits where the source has a value (the replica diverged): the source state wins.
      stats.onHealed?.('dir replaced by value', op.key);
      await deleteTree(dst, op.key);
      return putValue(dst, op, stats, healed + 1);
    }
    if (err instanceof NotADirectoryError && err.etcdCause && err.etcdCause !== op.key) {
      // A value sits where the source has a parent directory.
      stats.onHealed?.('value replaced by parent dir', err.etcdCause);
      await deleteTree(dst, err.etcdCause);
      return putValue(dst, op, stats, healed + 1);
    }
    throw err;
  }
}

async function mkdir(dst: EtcdClient, op: Extract<DstOp, { kind: 'mkdir' }>, stats: ApplyStats, healed = 0): Promise<void> {
  try {
    // Creates the dir, or replaces a file by it (as etcd does on the source for `PUT ?dir=true`).
    await dst.put(op.key, { dir: true, ttl: op.ttl ?? undefined });
  } catch (err) {
    if (err instanceof NotAFileError) {
      // Already a directory: keep its children, make its TTL match.
      try {
        await dst.put(op.key, { dir: true, prevExist: true, ttl: op.ttl });
      } catch (inner) {
        if (inner instanceof KeyNotFoundError && healed < 2) return mkdir(dst, op, stats, healed + 1); // expired meanwhile
        throw inner;
      }
      return;
    }
    if (err instanceof NotADirectoryError && err.etcdCause && err.etcdCause !== op.key && healed < 2) {
      stats.onHealed?.('value replaced by parent dir', err.etcdCause);
      await deleteTree(dst, err.etcdCause);
      return mkdir(dst, op, stats, healed + 1);
    }
    throw err;
  }
}

export async function deleteTree(dst: EtcdClient, key: string): Promise<void> {
  try {
    await dst.delete(key, { recursive: true });
  } catch (err) {
    // Gone already (or a parent is a file, so it cannot exist): the goal is reached.
    if (err instanceof KeyNotFoundError || err instanceof NotADirectoryError) return;
    throw err;
  }
}

/** Removes everything under the mirror's destination root, sparing the replication index and hidden keys. */
async function clearRoot(dst: EtcdClient, map: KeyMap): Promise<void> {
  if (map.dstRoot !== '/' && !isWithin('/__replication', map.dstRoot)) {
    try {
      await dst.delete(map.dstRoot, { recursive: true });
      return;
    } catch (err) {
      if (err instanceof KeyNotFoundError || err instanceof NotADirectoryError) return;
      if (!(err instanceof RootReadOnlyError)) throw err;
    }
  }
  let listing;
  try {
    listing = await dst.get(map.dstRoot);
  } catch (err) {
    if (err instanceof KeyNotFoundError) return;
    throw err;
  }
  for (const child of listing.body.node.nodes ?? []) {
    if (map.ownsDst(child.key)) await deleteTree(dst, child.key);
  }
}
