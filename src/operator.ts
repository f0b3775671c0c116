// Operator commands for the moments the seed incident was handled with curl under pressure:
// `verify` compares the trees the way the mirror maps keys; `index get|set` reads or safely sets the stored
// replication index against the source's history window.
import { parseArgs } from 'node:util';
import { EtcdClient } from './etcd/client.js';
import type { EtcdNode } from './etcd/decode.js';
import { parseCluster } from './etcd/endpoint.js';
import { ConfigError, KeyNotFoundError } from './etcd/errors.js';
import type { DstOp } from './apply.js';
import { compileIgnoreRegex, KeyMap, parsePrefix } from './keys.js';
import { HISTORY_WINDOW_EVENTS } from './health.js';
import { planReconcile, readDestination, takeSnapshot } from './reconcile.js';


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

/** `etcd-mirror verify SRC DST [...]`: exit 0 when equal, 1 with the differences. */
export async function verifyCommand(argv: string[], out: Out = defaultOut): Promise<number> {
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
      },
    }),
  );
  if (positionals.length !== 2) throw new ConfigError('verify: expected SRC and DST');
  const map = new KeyMap(
    parsePrefix(values['src-prefix'] ?? '/', '--src-prefix'),
    parsePrefix(values['dst-prefix'] ?? '/replica', '--dst-prefix'),
    values.strip === true,
    values['src-ignore-keys-regex'] === undefined ? undefined : compileIgnoreRegex(values['src-ignore-keys-regex']),
  );
  const src = new EtcdClient(parseCluster(positionals[0]!, 'SRC'), { connections: 2 });
  const dst = new EtcdClient(parseCluster(positionals[1]!, 'DST'), { connections: 2 });
  try {
    const snapshot = await takeSnapshot(src, map.srcPrefix);
    const plan = planReconcile(snapshot.root, await readDestination(dst, map), map, src.serverNow());
    const report: VerifyReport = {
      equal: plan.writes.length === 0 && plan.extra.length === 0,
      sourceIndex: snapshot.etcdIndex,
      compared: plan.unchanged + plan.writes.length + plan.extra.length,
      missing: plan.writes.filter((w) => !w.have).map((w) => keyOf(w.op)),
      extra: plan.extra,
      differing: plan.writes.filter((w) => w.have).map((w) => ({ key: keyOf(w.op), source: describeOp(w.op), destination: describeNode(w.have) })),
    };
    if (values.json) out.stdout(JSON.stringify(report, null, 2) + '\n');
    else if (report.equal) out.stdout(`equal: ${report.compared} keys compared (source index ${report.sourceIndex})\n`);
    else {
      const lines = [
        `DIFFERENT (source index ${report.sourceIndex}): ${report.missing.length} missing, ${report.extra.length} extra, ${report.differing.length} differing on the destination`,
        ...report.missing.map((k) => `missing   ${k}`),
        ...report.extra.map((k) => `extra     ${k}`),
        ...report.differing.map((d) => `differs   ${d.key}: source ${d.source}, destination ${d.destination}`),
      ];
      out.stdout(lines.join('\n') + '\n');
    }
    return report.equal ? 0 : 1;
  } finally {
    await Promise.all([src.close(), dst.close()]);
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
      },
    }),
  );
  const [verb, dstUrl, value] = positionals;
  if (verb !== 'get' && verb !== 'set') throw new ConfigError('index: expected "get" or "set"');
  if (!dstUrl) throw new ConfigError(`index ${verb}: expected DST`);
  if (verb === 'get' && value !== undefined) throw new ConfigError('index get: unexpected VALUE');
  if (verb === 'set' && (value === undefined || !/^\d+$/.test(value))) throw new ConfigError('index set: VALUE must be a decimal index');
  if (verb === 'set' && !values.src && !values.force) {
    throw new ConfigError('index set: pass --src SRC so the value can be checked against the source history window (or --force)');
  }
  const map = new KeyMap('/', parsePrefix(values['dst-prefix'] ?? '/replica', '--dst-prefix'), true, undefined);
  const dst = new EtcdClient(parseCluster(dstUrl, 'DST'), { connections: 1 });
  const src = values.src ? new EtcdClient(parseCluster(values.src, '--src'), { connections: 1 }) : null;
  try {
    const stored = await readIndex(dst, map.indexKey);
    const sourceIndex = src ? (await src.get('/')).etcdIndex : null;
    const window = sourceIndex === null ? null : { current: sourceIndex, oldest: Math.max(1, sourceIndex - HISTORY_WINDOW_EVENTS + 1) };
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
    await dst.put(map.indexKey, { value: String(next) });
    out.stdout(`${map.indexKey}: ${stored ?? '(missing)'} -> ${next}${window ? ` (source current ${window.current}, oldest ${window.oldest})` : ''}\n`);
    return 0;
  } finally {
    await Promise.all([dst.close(), src?.close()]);
  }
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
