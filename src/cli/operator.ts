// Operator commands for the moments the seed incident was handled with curl under pressure:
// `verify` compares the trees the way the mirror maps keys; `index get|set` reads or safely sets the stored
// replication index against the source's history window; `audit` compares at one source point as the daemon does.
import { parseArgs } from 'node:util';
import { apiFlag, checkApis, clusterFrom, CLUSTER_FLAGS, type Api } from './config.js';
import { EtcdClient } from '../etcd/v2/client.js';
import { V2Source } from '../replication/v2-source.js';
import { V3Client } from '../etcd/v3/client.js';
import { CompactedError } from '../etcd/v3/errors.js';
import { V3Destination } from '../replication/v3-destination.js';
import { V3Source } from '../replication/v3-source.js';
import { BodyGaps } from '../replication/v2/body-gaps.js';
import { ByteKeyMap, keyId } from '../replication/keyspace.js';
import type { EtcdNode } from '../etcd/v2/decode.js';
import type { Cluster } from '../etcd/endpoint.js';
import { ConfigError, KeyNotFoundError } from '../etcd/errors.js';
import type { DstOp } from '../replication/v2/apply.js';
import { compileIgnoreRegex, KeyMap, parsePrefix } from '../replication/keys.js';
import { HISTORY_WINDOW_EVENTS } from '../replication/window.js';
import { planReconcile, readDestination, takeSnapshot } from '../replication/v2/reconcile.js';
import { LIST_LIMIT, runAudit } from '../replication/audit.js';
import { v3PinnedReader } from '../replication/audit-readers.js';
import { v2BridgeReader, v2TreeReader } from '../replication/audit-readers-v2.js';


type Out = { stdout: (s: string) => void };
const defaultOut: Out = { stdout: (s) => process.stdout.write(s) };

/** parseArgs failures are bad input: one line, exit 2. */
function argsOrConfigError<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new ConfigError((err as Error).message.split('\n')[0] ?? 'invalid arguments');
  }
}

const describeNode = (n: EtcdNode | undefined): string =>
  n === undefined ? 'absent' : n.dir ? `dir${n.expiration ? ' with ttl' : ''}` : `value ${JSON.stringify(n.value ?? '').slice(0, 60)}${n.expiration ? ' with ttl' : ''}`;
const describeOp = (op: DstOp): string =>
  op.kind === 'mkdir' ? `dir${op.ttl !== null ? ' with ttl' : ''}` : op.kind === 'put' ? `value ${JSON.stringify(op.value).slice(0, 60)}${op.ttl !== undefined ? ' with ttl' : ''}` : op.kind;

export interface VerifyReport {
  equal: boolean;
  sourceIndex: number;
  compared: number;
  missing: string[];
  extra: string[];
  differing: { key: string; source: string; destination: string }[];
}

/** The flags verify and audit share: prefixes and mapping, the APIs, and each side's TLS and password files. */
function compareArgs(argv: string[], command: string) {
  const { values, positionals } = argsOrConfigError(() =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'src-prefix': { type: 'string' },
        'dst-prefix': { type: 'string' },
        strip: { type: 'boolean' },
        'src-ignore-keys-regex': { type: 'string' },
        json: { type: 'boolean' },
        'src-api': { type: 'string' },
        'dst-api': { type: 'string' },
        ...CLUSTER_FLAGS,
      },
    }),
  );
  if (positionals.length !== 2) throw new ConfigError(`${command}: expected SRC and DST`);
  const srcApi = apiFlag(values['src-api'], '--src-api');
  const dstApi = apiFlag(values['dst-api'], '--dst-api');
  checkApis(srcApi, dstApi);
  const map = new KeyMap(
    parsePrefix(values['src-prefix'] ?? '/', '--src-prefix'),
    parsePrefix(values['dst-prefix'] ?? '/replica', '--dst-prefix'),
    values.strip === true,
    values['src-ignore-keys-regex'] === undefined ? undefined : compileIgnoreRegex(values['src-ignore-keys-regex']),
  );
  const srcCluster = clusterFrom(positionals[0]!, 'SRC', values, 'src');
  const dstCluster = clusterFrom(positionals[1]!, 'DST', values, 'dst');
  return { srcApi, dstApi, map, srcCluster, dstCluster, json: values.json === true };
}

/** `etcd-mirror verify SRC DST [...]`: exit 0 when equal, 1 with the differences. */
export async function verifyCommand(argv: string[], out: Out = defaultOut): Promise<number> {
  const { srcApi, dstApi, map, srcCluster, dstCluster, json } = compareArgs(argv, 'verify');
  const report = await compareTrees(srcCluster, srcApi, dstCluster, dstApi, map);
  return printReport(report, json, srcApi === 'v3' ? 'revision' : 'index', out);
}

/** Compares the trees the way the mirror maps keys (verify; switchover's last check before it writes). */
export async function compareTrees(srcCluster: Cluster, srcApi: Api, dstCluster: Cluster, dstApi: Api, map: KeyMap): Promise<VerifyReport> {
  if (dstApi === 'v3') return compareV3(srcCluster, srcApi, dstCluster, map);
  const src = new EtcdClient(srcCluster, { connections: 2 });
  const dst = new EtcdClient(dstCluster, { connections: 2 });
  try {
    const snapshot = await takeSnapshot(src, map.srcPrefix);
    const plan = planReconcile(snapshot.root, await readDestination(dst, map), map, src.serverNow());
    return {
      equal: plan.writes.length === 0 && plan.extra.length === 0,
      sourceIndex: snapshot.etcdIndex,
      compared: plan.unchanged + plan.writes.length + plan.extra.length,
      missing: plan.writes.filter((w) => !w.have).map((w) => keyOf(w.op)),
      extra: plan.extra,
      differing: plan.writes.filter((w) => w.have).map((w) => ({ key: keyOf(w.op), source: describeOp(w.op), destination: describeNode(w.have) })),
    };
  } finally {
    await Promise.all([src.close(), dst.close()]);
  }
}

function printReport(report: VerifyReport, json: boolean, position: 'index' | 'revision', out: Out): number {
  if (json) out.stdout(JSON.stringify(report, null, 2) + '\n');
  else if (report.equal) out.stdout(`equal: ${report.compared} keys compared (source ${position} ${report.sourceIndex})\n`);
  else {
    const lines = [
      `DIFFERENT (source ${position} ${report.sourceIndex}): ${report.missing.length} missing, ${report.extra.length} extra, ${report.differing.length} differing on the destination`,
      ...report.missing.map((k) => `missing   ${k}`),
      ...report.extra.map((k) => `extra     ${k}`),
      ...report.differing.map((d) => `differs   ${d.key}: source ${d.source}, destination ${d.destination}`),
    ];
    out.stdout(lines.join('\n') + '\n');
  }
  return report.equal ? 0 : 1;
}

const describeBytes = (value: Buffer, leased: boolean): string => `value ${JSON.stringify(value.toString('utf8')).slice(0, 60)}${leased ? ' on a lease' : ''}`;

/** verify into a v3 destination: the source snapshot (v2 or v3) as the mirror maps it, against the replica's keys. */
async function compareV3(srcCluster: Cluster, srcApi: Api, dstCluster: Cluster, map: KeyMap): Promise<VerifyReport> {
  const keys = new ByteKeyMap(map);
  const v2 = srcApi === 'v2' ? new EtcdClient(srcCluster, { connections: 2 }) : null;
  const source = v2
    ? new V2Source({ src: v2, map, highWater: 1, pipeline: true, rearmMs: 100, gaps: new BodyGaps(), onSourceIndex: () => {} })
    : new V3Source({ client: new V3Client(srcCluster), map: keys, highWater: 1, progressEveryMs: 1000, onSourceRevision: () => {} });
  const dstClient = new V3Client(dstCluster);
  try {
    const snapshot = await source.snapshot();
    const have = await new V3Destination(dstClient, keys, 128).readTree();
    const report: VerifyReport = { equal: true, sourceIndex: snapshot.revision, compared: 0, missing: [], extra: [], differing: [] };
    const seen = new Set<string>();
    for (const e of snapshot.entries) {
      const dstKey = keys.toDst(e.key);
      const id = keyId(dstKey);
      seen.add(id);
      const cur = have.get(id);
      const name = dstKey.toString('utf8');
      if (!cur) report.missing.push(name);
      else {
        const leased = (cur.lease ?? '0') !== '0';
        if (!cur.value.equals(e.value) || leased !== (e.lease !== undefined)) {
          report.differing.push({ key: name, source: describeBytes(e.value, e.lease !== undefined), destination: describeBytes(cur.value, leased) });
        }
      }
    }
    for (const [id, cur] of have) if (!seen.has(id)) report.extra.push(cur.key.toString('utf8'));
    report.compared = seen.size + report.extra.length;
    report.equal = report.missing.length + report.extra.length + report.differing.length === 0;
    return report;
  } finally {
    await Promise.all([source.close(), dstClient.close()]);
  }
}

const keyOf = (op: DstOp): string => (op.kind === 'clearRoot' ? '/' : op.key);

/** `etcd-mirror index get|set DST [VALUE] [--dst-prefix P] [--src SRC] [--force] [--json]`. */
export async function indexCommand(argv: string[], out: Out = defaultOut): Promise<number> {
  const { values, positionals } = argsOrConfigError(() =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'dst-prefix': { type: 'string' },
        src: { type: 'string' },
        force: { type: 'boolean' },
        json: { type: 'boolean' },
        'src-api': { type: 'string' },
        'dst-api': { type: 'string' },
        ...CLUSTER_FLAGS,
      },
    }),
  );
  const [verb, dstUrl, value] = positionals;
  const srcApi = apiFlag(values['src-api'], '--src-api');
  const dstApi = apiFlag(values['dst-api'], '--dst-api');
  checkApis(srcApi, dstApi);
  if (verb !== 'get' && verb !== 'set') throw new ConfigError('index: expected "get" or "set"');
  if (!dstUrl) throw new ConfigError(`index ${verb}: expected DST`);
  if (verb === 'get' && value !== undefined) throw new ConfigError('index get: unexpected VALUE');
  if (verb === 'set' && (value === undefined || !/^\d+$/.test(value))) throw new ConfigError('index set: VALUE must be a decimal index');
  if (verb === 'set' && !values.src && !values.force) {
    throw new ConfigError('index set: pass --src SRC so the value can be checked against the source history window (or --force)');
  }
  const map = new KeyMap('/', parsePrefix(values['dst-prefix'] ?? '/replica', '--dst-prefix'), true, undefined);
  const dstCluster = clusterFrom(dstUrl, 'DST', values, 'dst');
  const dst = dstApi === 'v3' ? new V3Destination(new V3Client(dstCluster), new ByteKeyMap(map), 128) : null;
  const dstV2 = dst ? null : new EtcdClient(dstCluster, { connections: 1 });
  const srcCluster = values.src ? clusterFrom(values.src, '--src', values, 'src') : null;
  const src = srcCluster && srcApi === 'v2' ? new EtcdClient(srcCluster, { connections: 1 }) : null;
  const srcV3 = srcCluster && srcApi === 'v3' ? new V3Client(srcCluster) : null;
  try {
    const stored = dst ? await dst.readCheckpoint().catch(() => null) : await readIndex(dstV2!, map.indexKey);
    const window = src
      ? await (async () => {
          const current = (await src.get('/')).etcdIndex;
          return { current, oldest: Math.max(1, current - HISTORY_WINDOW_EVENTS + 1) };
        })()
      : srcV3
        ? await v3Window(srcV3, [stored, value === undefined ? null : Number(value)])
        : null;
    const status = (idx: number | null) =>
      idx === null || window === null
        ? 'unknown'
        : idx > window.current
          ? 'AHEAD of the source (impossible for an index taken from this source)'
          : idx + 1 < window.oldest
            ? `OUT OF THE WINDOW: ${window.oldest - idx - 1} events older than the source keeps; the mirror will recover from a snapshot`
            : `inside the window, ${window.current - idx} events behind`;
    if (verb === 'get') {
      if (values.json) out.stdout(JSON.stringify({ indexKey: map.indexKey, stored, source: window }) + '\n');
      else {
        out.stdout(`${map.indexKey}: ${stored ?? '(missing)'}\n`);
        if (window) out.stdout(`source: current index ${window.current}, oldest index in its history ${window.oldest}\nstatus: ${status(stored)}\n`);
      }
      return 0;
    }
    const next = Number(value);
    if (window && !values.force) {
      if (next > window.current) throw new ConfigError(`index set: ${next} is above the source's current index ${window.current} (events in between would be skipped); use --force to override`);
      if (next + 1 < window.oldest) throw new ConfigError(`index set: ${next} is older than the source's history window (oldest ${window.oldest}); the mirror would need a snapshot recovery; use --force to override`);
    }
    if (dst) await dst.writeCheckpoint(next);
    else await dstV2!.put(map.indexKey, { value: String(next) });
    out.stdout(`${map.indexKey}: ${stored ?? '(missing)'} -> ${next}${window ? ` (source current ${window.current}, oldest ${window.oldest})` : ''}\n`);
    return 0;
  } finally {
    await Promise.all([dst?.client.close(), dstV2?.close(), src?.close(), srcV3?.close()]);
  }
}

/**
 * A v3 source keeps history back to its last compaction, which it does not report: the oldest revision a
 * mirror can resume after is found by asking for the candidates' next revisions (a compacted one is refused).
 */
async function v3Window(src: V3Client, candidates: (number | null)[]): Promise<{ current: number; oldest: number }> {
  const current = (await src.status()).revision;
  let oldest = 1;
  for (const c of candidates) {
    if (c === null || c + 1 > current) continue;
    try {
      await src.range(Buffer.from('/'), { revision: c + 1, limit: 1, keysOnly: true });
    } catch (err) {
      if (!(err instanceof CompactedError)) throw err;
      oldest = Math.max(oldest, err.compactRevision || c + 2);
    }
  }
  return { current, oldest };
}

async function readIndex(dst: EtcdClient, key: string): Promise<number | null> {
  try {
    const raw = (await dst.get(key)).body.node.value ?? '';
    return /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : null;
  } catch (err) {
    if (err instanceof KeyNotFoundError) return null;
    throw err;
  }
}

/** Reads 1 s apart on a pair that is not pinned (v2 source): a difference must persist through all of them. */
const AUDIT_READS = 3;

/**
 * `etcd-mirror audit SRC DST [...]`: the daemon's audit, read-only. v3 → v3 compares exactly as the daemon does:
 * the source at the revision the replica's own index says, the replica at a revision holding that index. A v2
 * source has no such pin: a key counts as different only when it differs in each of three reads 1 s apart (a
 * busy mirror's writes in flight settle in between). Exit 0 equal, 1 different or not comparable, 2 bad flags.
 */
export async function auditCommand(argv: string[], out: Out = defaultOut): Promise<number> {
  const { srcApi, dstApi, map, srcCluster, dstCluster, json } = compareArgs(argv, 'audit');
  const keys = new ByteKeyMap(map);
  const srcV2 = srcApi === 'v2' ? new EtcdClient(srcCluster, { connections: 2 }) : null;
  const srcV3 = srcApi === 'v3' ? new V3Client(srcCluster) : null;
  const dstV2 = dstApi === 'v2' ? new EtcdClient(dstCluster, { connections: 2 }) : null;
  const dstV3 = dstApi === 'v3' ? new V3Client(dstCluster) : null;
  const reader = srcV3
    ? v3PinnedReader(srcV3, dstV3!, keys)
    : dstV2
      ? v2TreeReader(srcV2!, dstV2, map)
      : v2BridgeReader(srcV2!, map, dstV3!, keys);
  const guard = { allowMassDelete: true, massDeleteRatio: 1 };
  const signal = new AbortController().signal;
  try {
    let result = await runAudit({ reader, guard }, signal);
    // Names listed in every read: in flight in one read, settled in the next.
    let persistent = new Set(result.listed.map((d) => d.key));
    for (let read = 1; !reader.pinned && result.result === 'different' && read < AUDIT_READS; read++) {
      await new Promise((r) => setTimeout(r, 1_000));
      result = await runAudit({ reader, guard }, signal);
      if (result.result !== 'different') break;
      const listed = new Set(result.listed.map((d) => d.key));
      persistent = new Set([...persistent].filter((k) => listed.has(k)));
      if (persistent.size === 0 && result.differing <= LIST_LIMIT) result = { ...result, result: 'equal', differing: 0, listed: [] };
    }
    const listed = result.listed.filter((d) => reader.pinned || persistent.has(d.key));
    const position = srcApi === 'v3' ? 'revision' : 'index';
    if (json) out.stdout(JSON.stringify({ ...result, listed, position }, null, 2) + '\n');
    else if (result.result === 'equal') out.stdout(`equal: ${result.keys} keys compared at source ${position} ${result.at}\n`);
    else if (result.result === 'aborted') out.stdout(`not compared: ${result.reason ?? 'unknown'}\n`);
    else {
      const lines = [`DIFFERENT at source ${position} ${result.at}: ${result.differing} of ${result.keys} keys`, ...listed.map((d) => `${d.kind.padEnd(8)} ${d.key}`)];
      if (result.differing > listed.length) lines.push(`... and ${result.differing - listed.length} more`);
      out.stdout(lines.join('\n') + '\n');
    }
    return result.result === 'equal' ? 0 : 1;
  } finally {
    await Promise.all([srcV2?.close(), srcV3?.close(), dstV2?.close(), dstV3?.close()]);
  }
}
