// Source event → idempotent destination operation. Source preconditions (prevValue, prevIndex, prevExist)
// are never replayed: the source already decided, and destination indexes differ. Applying any suffix of the
// event stream again, in order, converges to the same destination state.
import type { EtcdClient } from '../../etcd/v2/client.js';
import type { EtcdEvent, EtcdNode } from '../../etcd/v2/decode.js';
import { KeyNotFoundError, NodeExistError, NotADirectoryError, NotAFileError, RootReadOnlyError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';
import { isWithin } from '../../etcd/v2/paths.js';

export type DstOp =
  /** Write a value; `ttl` in whole seconds (rounded up), absent for a permanent key. */
  | { kind: 'put'; key: string; value: string; ttl?: number }
  /** Make sure a directory exists with this TTL (`null`: no TTL). */
  | { kind: 'mkdir'; key: string; ttl: number | null }
  /** Remove a key or a whole subtree; "not found" is success. */
  | { kind: 'delete'; key: string }
  /** A write whose TTL ran out before it got here: the key goes, but the directories the source's write made
   * around it outlive it there. `parent` is made if missing and left as it is otherwise (null: outside the mirror). */
  | { kind: 'lapsed'; key: string; parent: string | null }
  /** Everything the mirror owns on the destination goes (an ancestor of the source prefix was removed). */
  | { kind: 'clearRoot' };

/** An op on one key that is no directory: one request. */
export type LeafOp = Extract<DstOp, { kind: 'put' } | { kind: 'delete' }>;

/** Remaining whole seconds until `expiration`, from the leader's absolute clock; <= 0 means already expired. */
export function remainingTtl(expiration: string, nowMs: number): number {
  return Math.ceil((Date.parse(expiration) - nowMs) / 1000);
}

const REMOVALS = new Set(['delete', 'expire', 'compareAndDelete']);
const WRITES = new Set(['set', 'create', 'update', 'compareAndSwap']);

/** The destination operation for a mirrored event, or null for an action this mirror does not know. */
export function planEvent(event: EtcdEvent, map: KeyMap, nowMs: number, scope: 'mirrored' | 'ancestor'): DstOp | null {
  if (scope === 'ancestor') return { kind: 'clearRoot' };
  const key = map.toDst(event.node.key);
  if (REMOVALS.has(event.action)) return key === map.dstRoot ? { kind: 'clearRoot' } : { kind: 'delete', key };
  if (!WRITES.has(event.action)) return null;
  const op = planNode(event.node, key, nowMs);
  return op.kind === 'delete' ? { kind: 'lapsed', key, parent: parentWithin(key, map.dstRoot) } : op;
}

/** The parent of `key` if the mirror owns it on the destination (the root itself included, `/` never). */
function parentWithin(key: string, dstRoot: string): string | null {
  const parent = key.slice(0, key.lastIndexOf('/'));
  return parent !== '' && key !== dstRoot && isWithin(parent, dstRoot) ? parent : null;
}

/** Operation that makes destination `key` equal to the source node (used by events and by reconcile). */
export function planNode(node: EtcdNode, key: string, nowMs: number): DstOp {
  const ttl = node.expiration !== undefined ? remainingTtl(node.expiration, nowMs) : undefined;
  // Already expired on the source: its `expire` event follows; until then nothing should linger here.
  if (ttl !== undefined && ttl <= 0) return { kind: 'delete', key };
  if (node.dir) return { kind: 'mkdir', key, ttl: ttl ?? null };
  return ttl === undefined ? { kind: 'put', key, value: node.value ?? '' } : { kind: 'put', key, value: node.value ?? '', ttl };
}

/** The destination key an op touches, and whether it affects a whole subtree (then it orders against everything). */
export function opFootprint(op: DstOp, map: KeyMap): { key: string; subtree: boolean } {
  if (op.kind === 'clearRoot') return { key: map.dstRoot, subtree: true };
  if (op.kind === 'lapsed') return { key: op.parent ?? op.key, subtree: true };
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
    case 'lapsed':
      await deleteTree(dst, op.key);
      if (op.parent !== null) await ensureDir(dst, op.parent);
      return;
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

/** Makes `key` a directory if nothing is there (with its missing ancestors, as etcd does); an existing one keeps its TTL. */
async function ensureDir(dst: EtcdClient, key: string): Promise<void> {
  try {
    await dst.put(key, { dir: true, prevExist: false });
  } catch (err) {
    if (!(err instanceof NodeExistError)) throw err;
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
