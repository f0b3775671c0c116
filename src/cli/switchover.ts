// `etcd-mirror switchover [flags] OLD NEW`: makes the replica NEW the primary. In order, one line each:
// (1) the mirror OLD → NEW is caught up for sure (OLD quiet for --quiet S, the stored checkpoint at OLD's index,
// the trees equal); (2) NEW gets the fence of this direction (src/replication/fence.ts): every OLD → NEW mirror
// stands down and none starts again; (3) OLD gets the reverse checkpoint, NEW's index at the fence write itself, so
// nothing written into NEW before the fence is replayed and nothing after it is skipped (the seed's lesson: the
// index to start from is the one of the write that ends the old era, not a copied key), and the fence an earlier
// switchover set on OLD for the reverse direction is lifted; (4) the reverse mirror's command line.
// Every step can be run again: a rerun after a kill finds the fence and reuses its index.
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, KeyNotFoundError, NodeExistError } from '../etcd/errors.js';
import { EtcdClient } from '../etcd/v2/client.js';
import type { Cluster } from '../etcd/endpoint.js';
import { encodeFence, FENCE_POLL_MS, parseFence } from '../replication/fence.js';
import { KeyMap } from '../replication/keys.js';
import { DAEMON_OPTIONS, parseConfig, type Config } from './config.js';
import { compareTrees } from './operator.js';
import { invertMapping, reverseCommand, SwitchoverRefusedError, switchoverKeys, type Mapping, type OptionToken } from './switchover-plan.js';

const OPTIONS = {
  ...DAEMON_OPTIONS,
  quiet: { type: 'string' },
  'dry-run': { type: 'boolean' },
} as const;

/** How often OLD's index and NEW's checkpoint are read during the quiet period. */
const QUIET_POLL_MS = 200;

export const SWITCHOVER_HELP = `usage: etcd-mirror switchover [--quiet S] [--dry-run] [daemon flags] OLD NEW

Makes NEW (the destination of the mirror OLD → NEW) the primary: checks that the mirror is caught up (OLD's store
index still for S seconds, default 5 — make OLD read-only first; the stored checkpoint at OLD's index; the trees
equal), fences the direction OLD → NEW on NEW (running mirrors stand down within 2 s, restarted ones refuse to
start), stores NEW's index after the fence as the reverse mirror's checkpoint on OLD, and prints the reverse
mirror's command line. Takes the daemon's flags (paste the unit's); a failed check changes nothing (exit 1).
`;

type Out = { stdout: (s: string) => void };
const defaultOut: Out = { stdout: (s) => process.stdout.write(s) };

/** What the steps need of a cluster, whatever its API. */
interface Ops {
  /** The store index (v2 X-Etcd-Index) or revision (v3). */
  index(): Promise<number>;
  /** A key's value and the index/revision it was last written at; null when absent. */
  read(key: string): Promise<{ value: string; index: number } | null>;
  /** Creates the key unless it exists; the index of the create, or of the existing key's last write. */
  create(key: string, value: string): Promise<{ created: boolean; index: number; value: string }>;
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  close(): Promise<void>;
}

function v2Ops(cluster: Cluster): Ops {
  const c = new EtcdClient(cluster, { connections: 2 });
  const read = async (key: string) => {
    try {
      const node = (await c.get(key, { quorum: true })).body.node;
      return { value: node.value ?? '', index: node.modifiedIndex };
    } catch (err) {
      if (err instanceof KeyNotFoundError) return null;
      throw err;
    }
  };
  return {
    index: async () => (await c.get('/', { quorum: true })).etcdIndex,
    read,
    async create(key, value) {
      try {
        return { created: true, index: (await c.put(key, { value, prevExist: false })).body.node.modifiedIndex, value };
      } catch (err) {
        if (!(err instanceof NodeExistError)) throw err;
        const have = await read(key);
        if (!have) throw err;
        return { created: false, ...have };
      }
    },
    put: async (key, value) => void (await c.put(key, { value })),
    async delete(key) {
      try {
        await c.delete(key);
      } catch (err) {
        if (!(err instanceof KeyNotFoundError)) throw err;
      }
    },
    close: () => c.close(),
  };
}

async function v3Ops(cluster: Cluster): Promise<Ops> {
  const { V3Client } = await import('../etcd/v3/client.js');
  const c = new V3Client(cluster);
  return {
    index: async () => (await c.status()).revision,
    async read(key) {
      const kv = (await c.range(Buffer.from(key))).kvs[0];
      return kv ? { value: kv.value.toString('utf8'), index: kv.modRevision } : null;
    },
    async create(key, value) {
      const k = Buffer.from(key);
      const res = await c.txn({
        compare: [{ key: k, target: 'create', result: 'equal', value: 0 }],
        success: [{ put: { key: k, value: Buffer.from(value) } }],
        failure: [{ range: { key: k } }],
      });
      if (res.succeeded) return { created: true, index: res.revision, value };
      const kv = res.responses[0]?.range?.kvs[0];
      if (!kv) throw new Error(`${key}: neither created nor found`);
      return { created: false, index: kv.modRevision, value: kv.value.toString('utf8') };
    },
    put: async (key, value) => void (await c.put(Buffer.from(key), Buffer.from(value))),
    delete: async (key) => void (await c.deleteRange(Buffer.from(key))),
    close: () => c.close(),
  };
}

const decimal = (raw: string | undefined): number | null => (raw !== undefined && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : null);

export async function switchoverCommand(argv: string[], out: Out = defaultOut): Promise<number> {
  let tokens;
  let values;
  try {
    ({ tokens, values } = parseArgs({ args: argv, allowPositionals: true, strict: true, tokens: true, options: OPTIONS }));
  } catch (err) {
    throw new ConfigError((err as Error).message.split('\n')[0] ?? 'invalid arguments');
  }
  if (values.help) {
    out.stdout(SWITCHOVER_HELP);
    return 0;
  }
  const quiet = values.quiet === undefined ? 5 : Number(values.quiet);
  if (!(Number.isFinite(quiet) && quiet >= 0 && quiet <= 3600) || values.quiet?.trim() === '') throw new ConfigError('--quiet: expected seconds from 0 to 3600');
  const options: OptionToken[] = tokens.flatMap((t) => (t.kind === 'option' ? [{ name: t.name, value: t.value }] : []));
  const positionals = tokens.flatMap((t) => (t.kind === 'positional' ? [t.value] : []));
  if (positionals.length !== 2) throw new ConfigError(`switchover: expected OLD and NEW (got ${positionals.length} arguments)`);
  // The daemon's own parsing: the same validation, TLS files and password files as the unit gets.
  const daemonArgs = argv.filter((_, i) => !tokens.some((t) => (t.kind === 'option' && (t.name === 'quiet' || t.name === 'dry-run') && (t.index === i || (t.inlineValue === false && t.index + 1 === i)))));
  const parsed = parseConfig(daemonArgs);
  if (parsed.kind !== 'run') throw new ConfigError('switchover: expected OLD and NEW');
  const config = parsed.config;
  const [oldRaw, newRaw] = positionals as [string, string];
  try {
    return await run(config, { quiet, dryRun: values['dry-run'] === true, options, oldRaw, newRaw }, out);
  } catch (err) {
    if (err instanceof SwitchoverRefusedError) {
      process.stderr.write(`etcd-mirror: switchover refused: ${err.message}; nothing was changed\n`);
      return 1;
    }
    throw err;
  }
}

interface RunOptions {
  quiet: number;
  dryRun: boolean;
  options: OptionToken[];
  oldRaw: string;
  newRaw: string;
}

async function run(config: Config, opts: RunOptions, out: Out): Promise<number> {
  if (config.srcApi !== config.dstApi) {
    throw new SwitchoverRefusedError('APIs', `OLD is ${config.srcApi} and NEW is ${config.dstApi}: the reverse mirror, v3 → v2, is not supported; a v2 → v3 bridge cannot be switched over`);
  }
  const forward: Mapping = { srcPrefix: config.srcPrefix, dstPrefix: config.dstPrefix, strip: config.strip, ignore: opts.options.filter((o) => o.name === 'src-ignore-keys-regex').pop()?.value };
  const reverse = invertMapping(forward);
  const keys = switchoverKeys(forward, reverse);
  const open = config.srcApi === 'v3' ? v3Ops : v2Ops;
  const [oldOps, newOps] = await Promise.all([open(config.src), open(config.dst)]);
  const position = config.srcApi === 'v3' ? 'revision' : 'index';
  const step = (n: number, text: string) => out.stdout(`step ${n}/4 ${text}\n`);
  let wrote = false;
  try {
    // 1. Caught up, for sure.
    const fencedBefore = await newOps.read(keys.forwardFence);
    const first = await oldOps.index();
    let checkpoint = decimal((await newOps.read(keys.forwardCheckpoint))?.value);
    if (checkpoint === null) {
      throw new SwitchoverRefusedError('caught up', `no replication ${position} at ${keys.forwardCheckpoint} on NEW: no mirror OLD → NEW with these prefixes has run`);
    }
    const until = Date.now() + opts.quiet * 1000;
    while (Date.now() < until) {
      await sleep(Math.min(QUIET_POLL_MS, Math.max(0, until - Date.now())));
      const now = await oldOps.index();
      if (now !== first) {
        throw new SwitchoverRefusedError('quiet', `writes are still arriving on OLD: its store ${position} moved from ${first} to ${now} within the quiet period; make OLD read-only first (etcd-mirror cannot)`);
      }
      checkpoint = decimal((await newOps.read(keys.forwardCheckpoint))?.value) ?? checkpoint;
    }
    // A rerun after the fence: the mirror stood down at the fence, and this command's own writes on OLD (the
    // reverse checkpoint, a lifted fence) moved OLD's index since; the mirror had to be caught up then.
    const fencedAt = fencedBefore ? parseFence(fencedBefore.value)?.oldIndex : undefined;
    const target = fencedAt ?? first;
    if (checkpoint < target) {
      throw new SwitchoverRefusedError('caught up', `the mirror is behind: ${keys.forwardCheckpoint} on NEW is ${checkpoint}, OLD is at ${target}${fencedAt === undefined ? '' : ' (when fenced)'} (is the mirror OLD → NEW running?)`);
    }
    if (checkpoint > target) {
      throw new SwitchoverRefusedError('caught up', `${keys.forwardCheckpoint} on NEW is ${checkpoint}, ahead of OLD's ${target}: it was not written by a mirror of this OLD`);
    }
    const map = new KeyMap(config.srcPrefix, config.dstPrefix, config.strip, config.ignoreRegex);
    const report = await compareTrees(config.src, config.srcApi, config.dst, config.dstApi, map);
    if (!report.equal) {
      const sample = report.missing[0] ?? report.extra[0] ?? report.differing[0]?.key;
      throw new SwitchoverRefusedError('trees', `OLD and NEW differ under the prefixes: ${report.missing.length} missing, ${report.extra.length} extra, ${report.differing.length} differing on NEW (first: ${sample}); see etcd-mirror verify`);
    }
    if ((await oldOps.index()) !== first) throw new SwitchoverRefusedError('quiet', `writes are still arriving on OLD: its store ${position} moved after ${first}`);
    step(1, `caught up: OLD's store ${position} ${first} did not move for ${opts.quiet} s; ${keys.forwardCheckpoint} on NEW is ${checkpoint}; trees equal (${report.compared} keys compared)`);

    const reverseLine = reverseCommand(opts.options, reverse, config.srcApi, opts.oldRaw, opts.newRaw);
    const printed = reverseLine.line + (reverseLine.redacted ? '   (password left out of the URL: pass it with --src-password-file / --dst-password-file)' : '');
    if (opts.dryRun) {
      const lift = await oldOps.read(keys.reverseFence);
      step(2, fencedBefore ? `would keep the fence at ${keys.forwardFence} on NEW (set ${parseFence(fencedBefore.value)?.at ?? 'earlier'})` : `would write the fence ${keys.forwardFence} on NEW`);
      step(3, `would store NEW's ${position} after the fence (now ${await newOps.index()}) at ${keys.reverseCheckpoint} on OLD${lift ? `, and lift the fence ${keys.reverseFence} on OLD` : ''}`);
      step(4, `reverse mirror: ${printed}`);
      out.stdout('dry run: nothing was changed\n');
      return 0;
    }

    // 2. Fence the old direction.
    wrote = true;
    const record = { at: new Date().toISOString(), from: config.src.origin, to: config.dst.origin, oldIndex: first };
    const fence = await newOps.create(keys.forwardFence, encodeFence(record));
    if (config.dstApi === 'v2') {
      // v2 mirrors see the fence by a poll: after this none writes (v3 ones are refused by etcd at once). A rerun
      // waits too: the run that wrote the fence may have been killed before its wait was over.
      await sleep(4 * FENCE_POLL_MS);
    }
    step(
      2,
      fence.created
        ? `fenced: wrote ${keys.forwardFence} on NEW at ${position} ${fence.index}; mirrors OLD → NEW have stood down and will not start again`
        : `fenced already: ${keys.forwardFence} on NEW since ${parseFence(fence.value)?.at ?? '?'} (${position} ${fence.index}), kept`,
    );

    // 3. The reverse checkpoint: NEW's index at the fence write.
    const stored = decimal((await oldOps.read(keys.reverseCheckpoint))?.value);
    let said: string;
    if (stored === fence.index) said = `${keys.reverseCheckpoint} on OLD is ${fence.index} already`;
    else if (!fence.created && stored !== null && stored > fence.index) said = `${keys.reverseCheckpoint} on OLD is ${stored}, past the fence at ${fence.index}: a reverse mirror has run from it; kept`;
    else {
      await oldOps.put(keys.reverseCheckpoint, String(fence.index));
      said = `stored ${fence.index} (NEW's ${position} at the fence) at ${keys.reverseCheckpoint} on OLD`;
    }
    const lift = await oldOps.read(keys.reverseFence);
    if (lift) await oldOps.delete(keys.reverseFence);
    step(3, `reverse checkpoint: ${said}; ${lift ? `lifted the fence ${keys.reverseFence} on OLD (set by the switchover at ${parseFence(lift.value)?.at ?? '?'})` : 'no fence on OLD to lift'}`);

    // 4. The reverse mirror.
    step(4, `reverse mirror: ${printed}`);
    return 0;
  } catch (err) {
    if (err instanceof SwitchoverRefusedError || !wrote) throw err;
    throw new Error(`stopped after fencing NEW: ${(err as Error).message}; run the same command again to complete`, { cause: err });
  } finally {
    await Promise.all([oldOps.close(), newOps.close()]);
  }
}
