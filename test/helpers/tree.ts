// Snapshot and compare etcd subtrees: the oracle for "is the replica equal to the source".
import type { EtcdClient } from '../../src/etcd/v2/client.js';
import type { EtcdNode } from '../../src/etcd/v2/decode.js';
import { KeyNotFoundError } from '../../src/etcd/errors.js';
import { normalizeKey } from '../../src/etcd/v2/paths.js';
import { waitFor } from './wait.js';
import { COPY_TTL_MARGIN_S } from '../../src/replication/copy-ttl.js';

export interface NodeSummary {
  dir: boolean;
  value?: string;
  /** Whether the node has a TTL at all (the remaining seconds differ between clusters, so only presence counts). */
  ttl: boolean;
  /** RFC 3339 expiry, compared within a tolerance. */
  expiration?: string;
}

export type Tree = Map<string, NodeSummary>;

/**
 * Quorum, recursive, sorted GET of `prefix`, flattened to relative keys ('' = the prefix node, '/a/b' below it).
 * Directories are included (empty ones matter). etcd omits hidden nodes (a segment starting with '_') from
 * recursive GETs, so they never show up here; '/__replication' is excluded explicitly for prefix '/' anyway.
 * A missing prefix gives an empty map.
 */
export async function dumpTree(client: EtcdClient, prefix: string): Promise<Tree> {
  const base = normalizeKey(prefix);
  const tree: Tree = new Map();
  let root: EtcdNode;
  try {
    root = (await client.get(base, { recursive: true, quorum: true, sorted: true })).body.node;
  } catch (err) {
    if (err instanceof KeyNotFoundError) return tree;
    throw err;
  }
  const rel = (key: string | undefined): string => {
    // The root node of '/' comes back without a key.
    if (key === undefined || key === base || key === '/') return '';
    return base === '/' ? key : key.slice(base.length);
  };
  const visit = (node: EtcdNode): void => {
    const key = rel(node.key);
    if (base === '/' && (key === '/__replication' || key.startsWith('/__replication/'))) return;
    const summary: NodeSummary = { dir: node.dir === true, ttl: node.expiration !== undefined || node.ttl !== undefined };
    if (node.value !== undefined) summary.value = node.value;
    if (node.expiration !== undefined) summary.expiration = node.expiration;
    tree.set(key, summary);
    for (const child of node.nodes ?? []) visit(child);
  };
  visit(root);
  return tree;
}

/** Waits until no node under `prefix` has a TTL: a workload's short-lived keys have expired (etcd expires on a 500 ms tick). */
export async function waitForTtlsGone(client: EtcdClient, prefix: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(async () => ![...(await dumpTree(client, prefix)).values()].some((n) => n.ttl), `no TTL left under ${prefix}`, timeoutMs);
}

const show = (v: string | undefined): string => {
  if (v === undefined) return '(none)';
  const s = JSON.stringify(v);
  return s.length > 60 ? s.slice(0, 57) + '..."' : s;
};
const describe = (n: NodeSummary): string => (n.dir ? 'dir' : `value ${show(n.value)}`) + (n.ttl ? ' with ttl' : '');
const showKey = (k: string): string => (k === '' ? "'' (prefix)" : JSON.stringify(k));

/**
 * Differences from `a` (expected, usually the source) to `b` (actual, usually the replica), sorted by key:
 * "missing" = in a only, "extra" = in b only, "differs" = both, but dir/value/TTL/expiration disagree.
 */
export function diffTrees(a: Tree, b: Tree, opts: { expirationToleranceMs?: number; copyMarginMs?: number } = {}): string[] {
  const tolerance = opts.expirationToleranceMs ?? 3000;
  const margin = opts.copyMarginMs ?? 0;
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out: string[] = [];
  for (const k of keys) {
    const x = a.get(k);
    const y = b.get(k);
    if (!y) {
      out.push(`missing: ${showKey(k)} (${describe(x!)})`);
      continue;
    }
    if (!x) {
      out.push(`extra: ${showKey(k)} (${describe(y)})`);
      continue;
    }
    const why: string[] = [];
    if (x.dir !== y.dir) why.push(`${x.dir ? 'dir' : 'file'} vs ${y.dir ? 'dir' : 'file'}`);
    else if (!x.dir && x.value !== y.value) why.push(`value ${show(x.value)} vs ${show(y.value)}`);
    if (x.ttl !== y.ttl) why.push(x.ttl ? 'ttl vs no ttl' : 'no ttl vs ttl');
    else if (x.expiration !== undefined && y.expiration !== undefined) {
      // `b` may expire up to `copyMarginMs` later than `a` (a replica's copies: copy-ttl.ts), never earlier.
      const delta = Date.parse(y.expiration) - Date.parse(x.expiration);
      // NaN (unparsable) must count as a difference, hence the negated comparison.
      if (!(delta >= -tolerance && delta <= margin + tolerance)) why.push(`expiration ${x.expiration} vs ${y.expiration}`);
    }
    if (why.length) out.push(`differs: ${showKey(k)}: ${why.join('; ')}`);
  }
  return out;
}

/**
 * Polls both trees every 100 ms until they are equal (relative keys, so it works for any prefix mapping:
 * pass the mapped destination prefix); throws with up to 20 differences after `timeoutMs` (default 10 s).
 */
export async function expectTreesEqual(
  src: EtcdClient,
  srcPrefix: string,
  dst: EtcdClient,
  dstPrefix: string,
  opts: { timeoutMs?: number; ignore?: (relKey: string) => boolean } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const keep = (t: Tree): Tree => (opts.ignore ? new Map([...t].filter(([k]) => !opts.ignore!(k))) : t);
  let diffs: string[] = [];
  let lastError: unknown;
  for (;;) {
    try {
      const [a, b] = await Promise.all([dumpTree(src, srcPrefix), dumpTree(dst, dstPrefix)]);
      diffs = diffTrees(keep(a), keep(b), { copyMarginMs: COPY_TTL_MARGIN_S * 1000 });
      lastError = undefined;
      if (diffs.length === 0) return;
    } catch (err) {
      // A transient failure (e.g. a restarting cluster) is retried like a difference until the deadline.
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const head = `trees differ: ${src.origin}${srcPrefix} vs ${dst.origin}${dstPrefix}`;
  if (lastError !== undefined) throw new Error(`${head}: last dump failed: ${String(lastError)}`, { cause: lastError });
  const more = diffs.length > 20 ? `\n  ... and ${diffs.length - 20} more` : '';
  throw new Error(`${head} (${diffs.length} differences)\n  ${diffs.slice(0, 20).join('\n  ')}${more}`);
}
