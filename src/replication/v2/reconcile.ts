// Make the destination equal to a consistent source snapshot without ever emptying it first: write what
// differs, delete what the source lacks, leave equal keys untouched. Serves --reload and out-of-window recovery.
import PQueue from 'p-queue';
import type { EtcdClient } from '../../etcd/v2/client.js';
import type { EtcdNode } from '../../etcd/v2/decode.js';
import { KeyNotFoundError, MassDeleteRefusedError } from '../../etcd/errors.js';
import { deleteTree, executeOp, planNode, type ApplyStats, type DstOp } from './apply.js';
import type { KeyMap } from '../keys.js';
import { judgeSnapshot, type GuardOptions } from '../guard.js';

function ancestorsOf(key: string): string[] {
  const out: string[] = [];
  for (let i = key.lastIndexOf('/'); i > 0; i = key.lastIndexOf('/', i - 1)) out.push(key.slice(0, i));
  return out;
}

export interface Snapshot {
  /** X-Etcd-Index of the recursive GET: the snapshot is consistent at this index. */
  etcdIndex: number;
  /** The prefix node with its subtree, or null when the prefix does not exist on the source. reconcile() lets go
   * of it once planned, so a large snapshot can be collected while the writes run. */
  root: EtcdNode | null;
}

export async function takeSnapshot(src: EtcdClient, prefix: string, signal?: AbortSignal, timeoutMs?: number): Promise<Snapshot> {
  try {
    const res = await src.get(prefix, { recursive: true, quorum: true, sorted: true, signal, timeoutMs });
    return { etcdIndex: res.etcdIndex, root: res.body.node };
  } catch (err) {
    if (err instanceof KeyNotFoundError) return { etcdIndex: err.etcdIndex, root: null };
    throw err;
  }
}

/** Flattens a recursive GET into key → node, the root included (nodes are shared, not copied: snapshots are big). */
export function flatten(root: EtcdNode | null, into = new Map<string, EtcdNode>()): Map<string, EtcdNode> {
  if (!root) return into;
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    into.set(n.key ?? '/', n);
    if (n.nodes) for (const child of n.nodes) stack.push(child);
  }
  return into;
}

export interface ReconcileOptions extends GuardOptions {
  concurrency: number;
  /** The source's clock, ms. @default Date.now */
  nowMs?: () => number;
  onProgress?: (done: number, total: number) => void;
  healStats?: ApplyStats;
}

export interface ReconcileResult {
  written: number;
  deleted: number;
  unchanged: number;
  sourceKeys: number;
  destinationKeys: number;
}

/** TTLs count as equal when the expirations are within this many ms (the copies were written at different times). */
const EXPIRATION_SLACK_MS = 2_000;

function sameNode(want: DstOp, have: EtcdNode): boolean {
  if (want.kind === 'put') {
    if (have.dir || have.value !== want.value) return false;
    return sameTtl(want.ttl ?? null, have);
  }
  if (want.kind === 'mkdir') return have.dir === true && sameTtl(want.ttl, have);
  return false;
}

/** `have` comes from a destination read: its `ttl` is the destination's own count of remaining seconds, so no
 * clock of this host or of the destination enters the comparison. */
function sameTtl(wantTtl: number | null, have: EtcdNode): boolean {
  if (wantTtl === null) return have.expiration === undefined;
  if (have.expiration === undefined || have.ttl === undefined) return false;
  return Math.abs(have.ttl - wantTtl) * 1000 <= EXPIRATION_SLACK_MS + 1000;
}

/** What it takes to make the destination equal to the source snapshot. Pure: shared by reconcile and verify. */
export interface ReconcilePlan {
  /** Destination keys the source lacks (their subtrees included). */
  extra: string[];
  /** Destination keys that are absent or differ, with what they should become. */
  writes: { op: DstOp; have: EtcdNode | undefined }[];
  /** Keys to remove before writing: extras and type flips (dir ↔ value). */
  removals: string[];
  unchanged: number;
  sourceKeys: number;
  destinationKeys: number;
}

/** `sourceNowMs`: the source's clock (its TTL `expiration`s are its leader's wall clock). */
export function planReconcile(srcRoot: EtcdNode | null, dstRoot: EtcdNode | null, map: KeyMap, sourceNowMs: number): ReconcilePlan {
  const source = new Map<string, EtcdNode>();
  for (const [key, node] of flatten(srcRoot)) {
    if (map.scope(key, node.dir === true, 'get') !== 'mirrored') continue;
    source.set(map.toDst(key), node);
  }
  const destination = new Map<string, EtcdNode>();
  for (const [key, node] of flatten(dstRoot)) {
    // Keys whose source counterpart is ignored or hidden are not ours to delete.
    if (map.ownsDst(key) && map.scope(map.toSrc(key), node.dir === true, 'get') === 'mirrored') destination.set(key, node);
  }
  const removals: string[] = [];
  const writes: ReconcilePlan['writes'] = [];
  let unchanged = 0;
  for (const [key, node] of source) {
    if (key === '/') continue; // the root always exists
    const op = planNode(node, key, sourceNowMs);
    const have = destination.get(key);
    if (have && sameNode(op, have)) {
      unchanged++;
      continue;
    }
    // A file where a dir belongs (or the reverse) is removed first, so phases never race on types.
    if (have && (have.dir === true) !== (node.dir === true)) removals.push(key);
    if (op.kind === 'delete') removals.push(key);
    else writes.push({ op, have });
  }
  const extra = [...destination.keys()].filter((k) => !source.has(k));
  removals.push(...extra);
  return {
    extra,
    writes,
    removals,
    unchanged,
    sourceKeys: [...source.keys()].filter((k) => k !== map.dstRoot).length,
    destinationKeys: destination.size - (destination.has(map.dstRoot) ? 1 : 0),
  };
}

/** Recursive, quorum GET of the mirror's destination root (null when it does not exist). */
export async function readDestination(dst: EtcdClient, map: KeyMap, signal?: AbortSignal): Promise<EtcdNode | null> {
  try {
    return (await dst.get(map.dstRoot, { recursive: true, sorted: true, quorum: true, signal })).body.node;
  } catch (err) {
    if (err instanceof KeyNotFoundError) return null;
    throw err;
  }
}

export async function reconcile(
  snapshot: Snapshot,
  dst: EtcdClient,
  map: KeyMap,
  opts: ReconcileOptions,
  signal?: AbortSignal,
): Promise<ReconcileResult> {
  const now = opts.nowMs ?? Date.now;
  const plan = planReconcile(snapshot.root, await readDestination(dst, map, signal), map, now());
  snapshot.root = null;
  const { extra, removals, sourceKeys: sourceCount, destinationKeys: ownedCount } = plan;
  const deletedKeys = extra.length;
  const mkdirs = plan.writes.filter((w) => w.op.kind === 'mkdir').map((w) => w.op);
  const puts = plan.writes.filter((w) => w.op.kind !== 'mkdir').map((w) => w.op);
  const refused = judgeSnapshot(snapshot.etcdIndex, sourceCount, ownedCount, opts);
  if (refused) throw new MassDeleteRefusedError(refused);

  // Only the top-most removals are needed: deleting a dir takes its subtree along.
  const removalSet = new Set(removals);
  const topRemovals = [...removalSet].filter((k) => !ancestorsOf(k).some((a) => removalSet.has(a)));
  const total = topRemovals.length + mkdirs.length + puts.length;
  let done = 0;
  const tick = () => opts.onProgress?.(++done, total);
  // Items are queued only as the pool has room: a 100,000-key reload never holds 100,000 pending promises.
  const run = async <T>(items: readonly T[], apply: (item: T) => Promise<void>) => {
    const pool = new PQueue({ concurrency: opts.concurrency });
    let failure: { err: unknown } | undefined;
    for (const item of items) {
      if (failure) break;
      signal?.throwIfAborted();
      await pool.onSizeLessThan(opts.concurrency);
      pool.add(async () => {
        await apply(item);
        tick();
      }).catch((err: unknown) => (failure ??= { err }));
    }
    await pool.onIdle();
    if (failure) throw failure.err;
  };
  await run(topRemovals, (key) => deleteTree(dst, key));
  // Parents before children: one depth level at a time.
  const byDepth = new Map<number, DstOp[]>();
  for (const op of mkdirs) {
    const depth = (op as { key: string }).key.split('/').length;
    const level = byDepth.get(depth);
    if (level) level.push(op);
    else byDepth.set(depth, [op]);
  }
  for (const depth of [...byDepth.keys()].sort((a, b) => a - b)) {
    await run(byDepth.get(depth)!, (op) => executeOp(dst, op, map, opts.healStats));
  }
  await run(puts, (op) => executeOp(dst, op, map, opts.healStats));
  return {
    written: mkdirs.length + puts.length,
    deleted: deletedKeys,
    unchanged: plan.unchanged,
    sourceKeys: sourceCount,
    destinationKeys: ownedCount,
  };
}
