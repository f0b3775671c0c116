// Source event → idempotent destination operation (performed by writer.ts executeOp). Source preconditions
// (prevValue, prevIndex, prevExist) are never replayed: the source already decided, and destination indexes differ.
// Applying any suffix of the event stream again, in order, converges to the same destination state.
import { REMOVAL_ACTIONS, WRITE_ACTIONS, type EtcdEvent, type EtcdNode } from '../../etcd/v2/decode.js';
import type { KeyMap } from '../keys.js';
import { copyTtl } from '../copy-ttl.js';

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
