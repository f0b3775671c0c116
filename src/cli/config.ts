// Command line → frozen Config. Flags and defaults of the reference tool are kept as they are (operators'
// puppet templates and systemd units pass them); ours are additions.
import { parseArgs } from 'node:util';
import { ConfigError } from '../etcd/errors.js';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseCluster, type Cluster, type TlsFiles } from '../etcd/endpoint.js';
import { compileIgnoreRegex, parsePrefix } from '../replication/keys.js';
import { DEFAULT_SOURCE_BUDGET_PER_SECOND } from '../replication/v2/source-budget.js';
import type { Api, Ordering, ReplicationOptions } from '../replication/ports.js';

/** Replication's options (src/replication/ports.ts) and the process's own. */
export interface Config extends ReplicationOptions {
  readonly reload: boolean;
  readonly port: number;
  readonly listenAddress: string;
  readonly debug: boolean;
  /** Optional requests per second (quiet proofs, TTL re-reads) to a source whose requests are expensive; 0 = no limit. */
  readonly srcRequestBudget: number;
  /** Seconds between consistency audits (src/replication/audit.ts); 0 = off. */
  readonly auditIntervalSeconds: number;
  /** How long a password-bound side's lag must keep growing before the mirror says that auth holds it back. */
  readonly lagGrowthMs: number;
}

const APIS = ['v2', 'v3'] as const satisfies readonly Api[];
export type { Api, Ordering };

export function apiFlag(raw: string | undefined, flag: string): Api {
  if (raw === undefined) return 'v2';
  if ((APIS as readonly string[]).includes(raw)) return raw as Api;
  throw new ConfigError(`${flag}: expected v2 or v3`);
}

/** v3 → v2 is not built: v2 has no transactions to apply a revision atomically, and it is the API on its way out. */
export function checkApis(src: Api, dst: Api): void {
  if (src === 'v3' && dst === 'v2') throw new ConfigError('--src-api v3 with --dst-api v2 is not supported (mirror v3 into v3, or v2 into v2 or v3)');
}

const ORDERINGS = ['strict', 'adaptive', 'key'] as const satisfies readonly Ordering[];

export const HELP = `usage: etcd-mirror [-h] [--version] [-d] [--reload] [--src-prefix P] [--dst-prefix P] [--strip]
                   [--src-ignore-keys-regex R] [--port N] [--listen-address A] [--allow-mass-delete]
                   [--mass-delete-ratio F] [--write-concurrency N] [--checkpoint-ms N]
                   [--quiet-rearm-ms N] [--pipeline on|off] [--ordering strict|adaptive|key]
                   [--src-api v2|v3] [--dst-api v2|v3] [--dst-max-txn-ops N]
                   [--ha [--instance-id ID] [--ha-ttl S]] [--src-request-budget N] [--audit-interval S]
                   [--lag-growth-ms N]
                   [--src-ca F] [--src-cert F --src-key F] [--dst-ca F] [--dst-cert F --dst-key F]
                   [--src-password-file F] [--dst-password-file F] SRC DST

Live mirror of an etcd key prefix from the SRC cluster into the DST cluster (v2 → v2, v3 → v3, or v2 → v3).

positional arguments:
  SRC                       source cluster: scheme://[user[:pass]@]host:port (http or https; IPv6 as [::1]);
                            several members of one cluster as a comma-separated list (requests fail over)
  DST                       destination cluster, same form

reference-compatible options:
  -h, --help                show this help and exit
  --version                 print the version and exit
  -d, --debug               log every event (debug level)
  --reload                  reconcile DST to a consistent snapshot of SRC before tailing: writes what differs,
                            deletes what SRC lacks; never empties the replica first
  --src-prefix P            source prefix to mirror, recursively (default: /); on a path boundary, also
                            with v3: /conftool covers /conftool and /conftool/..., never /conftoolx
  --dst-prefix P            destination prefix (default: /replica)
  --strip                   map SP/x to DP/x; without it SP/x maps to DP + SP/x
  --src-ignore-keys-regex R full match on the source key: matching events are not written (the index still advances)
  --port N                  HTTP port (default: 8000): / help, /lag, /metrics, /state, /ui, /events,
                            /healthz, /readyz — all read-only

etcd-mirror options:
  --src-api v2|v3           API of the source cluster (default: v2)
  --dst-api v2|v3           API of the destination cluster (default: v2). v2 → v3 is a live bridge: v2 keys
                            become v3 keys of the same path, TTLs become leases, empty directories have no v3
                            form. v3 → v2 is not supported.
  --dst-max-txn-ops N       operations one destination Txn may carry (v3 destination; default: 128, etcd's
                            --max-txn-ops): a v3 destination gets whole source revisions, several per Txn,
                            with the replication index in the same Txn
  --ha                      high availability: run an instance like this on each of two hosts; they compete
                            for a lock on DST (next to the replication index) and only its holder replicates,
                            every write fenced by the lock; the other stands by and takes over when the lock
                            is released or expires
  --instance-id ID          this instance's name in the lock and on /state (default: host name:port)
  --ha-ttl S                lock TTL in seconds (default: 10); the active instance stops writing when it has
                            not renewed the lock for 2/3 of it
  --listen-address A        address the HTTP server binds (default: 0.0.0.0, as the reference); the HTTP
                            surface is read-only
  --allow-mass-delete       reconcile even to a source snapshot that looks wrong (empty, or much smaller
                            than the replica); without it such a snapshot is refused and retried later
  --mass-delete-ratio F     how much smaller than the replica (share of its keys) a source snapshot may be
                            and still count as plausible (default: 0.5: at least half the replica's size)
  --ordering MODE           order of destination writes (default: adaptive):
                              strict    the replica passes only through states the source had, in source
                                        order: one write at a time (the source is still read ahead)
                              adaptive  strict, unless the stored index's window headroom falls below 250
                                        events: then writes to unrelated keys overlap until it is back above 500
                              key       writes to unrelated keys always overlap (per-key order only): fastest
                                        catch-up, but the replica may show states the source never had
  --write-concurrency N     destination writes in flight when writes may overlap (default: 16)
  --checkpoint-ms N         how often the replication index is stored while events flow (default: 100)
  --quiet-rearm-ms N        while the prefix is quiet, re-arm the source watch this often (ms) so the stored
                            index follows the source's store index and never falls out of etcd's 1000-event
                            window (default: 100). A v3 source instead asks its watch for a progress
                            notification after this long without news (default there: 1000)
  --src-request-budget N    quiet re-arms and TTL re-reads per second when a source request is expensive (costs
                            over 10 ms more than /version: v2 password auth checks bcrypt on every request)
                            (default: 5; 0: no limit). The window wins: a re-arm goes ahead above the budget
                            when the store's index rate needs it, and the mirror says so
  --audit-interval S        every S seconds, prove the replica equal to the source at one source point, or
                            find, log, count and repair from the source the keys that differ (default: 300;
                            0: off); see /state "audit" and the etcdmirror_audit_* metrics
  --lag-growth-ms N         with a password on a side, a lag of 100+ events still growing after this long is
                            reported as held back by that side's auth (default: 10000)
  --src-ca F, --dst-ca F    PEM CA bundle to verify that cluster's https certificates (default: system CAs)
  --src-cert F, --src-key F PEM client certificate and key for the source (same with --dst-cert, --dst-key);
                            with --client-cert-auth and v2 or v3 auth on, the certificate's CN is the etcd user:
                            no password, and none of the per-request bcrypt cost a v2 password has
  --src-password-file F     the password of the user named in SRC (scheme://user@host:port), read from F (one
                            trailing newline ignored), so that it is not in the process list (same with
                            --dst-password-file); an empty file for a URL without a user means no password
  --pipeline on|off         off: the reference tool's synchronous loop — one long-poll per event, then the
                            write, then the index write — kept as the benchmark baseline (default: on)

other commands:
  etcd-mirror demo                          a real mirror between two throw-away local etcds, with the visualizer
  etcd-mirror demo [--src-api v3 --dst-api v3]   the same, between v3 (or v2 → v3) etcds
  etcd-mirror demo --ha                     two instances with --ha (kill the active one, watch the takeover)
  etcd-mirror verify SRC DST [--src-prefix P] [--dst-prefix P] [--strip] [--src-ignore-keys-regex R] [--json]
                     [--src-api v2|v3] [--dst-api v2|v3]
                                            compare the trees as the mirror maps keys; exit 0 equal, 1 different
  etcd-mirror index get DST [--dst-prefix P] [--src SRC] [--json] [--src-api v2|v3] [--dst-api v2|v3]
  etcd-mirror index set DST VALUE [--dst-prefix P] (--src SRC | --force) [--src-api ..] [--dst-api ..]
                                            read or safely set the stored replication index
  etcd-mirror audit SRC DST [same flags as verify]
                                            compare at one source point as the daemon's audit does (the
                                            replica's own index, read-only); exit 0 equal, 1 different
  (verify, audit and index take the same --src-/--dst- ca, cert, key and password-file flags as the daemon)
  etcd-mirror switchover [--quiet S] [--dry-run] [daemon flags] OLD NEW
                                            make NEW the primary: check the mirror OLD → NEW is caught up, fence
                                            it, store the reverse checkpoint on OLD, print the reverse command
  etcd-mirror viz [--format mermaid|svg|json]   print the lifecycle statechart
  etcd-mirror status [URL] [--timeout S]    summary of a running daemon from its /state (default URL:
                                            http://127.0.0.1:8000); exit 0 ready, 1 not ready, 2 unreachable

Replication index: stored on DST at /__replication<dst-prefix> (/__replication/__ROOT__ for /), as the
reference does, so an existing deployment can switch binaries without --reload.
Hidden keys (a path segment starting with _ below the source prefix) are not mirrored: etcd leaves them out of
recursive reads and live watches. On a v3 destination the index is a v3 key at the same path, a decimal source
index or revision, written in the same Txn as the data it covers. A v3 source has no hidden keys; only keys
under /__replication (another mirror's index) are left out.
`;

/** Per-side connection flags, shared by the daemon and the operator commands. */
export const CLUSTER_FLAGS = {
  'src-ca': { type: 'string' },
  'src-cert': { type: 'string' },
  'src-key': { type: 'string' },
  'src-password-file': { type: 'string' },
  'dst-ca': { type: 'string' },
  'dst-cert': { type: 'string' },
  'dst-key': { type: 'string' },
  'dst-password-file': { type: 'string' },
} as const;

type FlagValues = Record<string, string | boolean | undefined>;

/** Files are read once, at startup, so a bad path is a one-line error. */
function readFlagFile(v: FlagValues, flag: string): Buffer | undefined {
  const path = v[flag];
  if (typeof path !== 'string') return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`--${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Reads --{side}-ca/-cert/-key. */
function tlsFiles(v: FlagValues, side: 'src' | 'dst'): TlsFiles | undefined {
  const files: TlsFiles = { ca: readFlagFile(v, `${side}-ca`), cert: readFlagFile(v, `${side}-cert`), key: readFlagFile(v, `${side}-key`) };
  if (Boolean(files.cert) !== Boolean(files.key)) throw new ConfigError(`--${side}-cert and --${side}-key go together`);
  return files.ca || files.cert ? files : undefined;
}

/**
 * A cluster URL with its TLS files and, from --{side}-password-file, the password of the user named in the URL
 * (https://mirror@host:2379): so that no credential has to be on the command line, which `ps` shows everyone.
 */
export function clusterFrom(raw: string, what: string, v: FlagValues, side: 'src' | 'dst'): Cluster {
  const cluster = parseCluster(raw, what, tlsFiles(v, side));
  const file = readFlagFile(v, `${side}-password-file`);
  if (file === undefined) return cluster;
  const flag = `--${side}-password-file`;
  const user = cluster.members[0]!.username;
  // One trailing newline is how editors and `echo` end a file; anything else is part of the password.
  const password = file.toString('utf8').replace(/\r?\n$/, '');
  // An empty file for a URL without a user: that side needs no password (no auth, or a client certificate), so
  // that one unit file with both flags serves every cluster.
  if (user === undefined && password === '') return cluster;
  if (user === undefined) throw new ConfigError(`${flag}: ${what} names no user (scheme://user@host:port)`);
  if (cluster.members[0]!.password !== undefined) throw new ConfigError(`${flag}: ${what} carries a password too; give it in one place`);
  if (password === '') throw new ConfigError(`${flag}: the file is empty, but ${what} names user "${user}"`);
  return { ...cluster, members: cluster.members.map((m) => ({ ...m, password })) };
}

function pipelineFlag(raw: string | undefined): boolean {
  if (raw === undefined || raw === 'on') return true;
  if (raw === 'off') return false;
  throw new ConfigError('--pipeline: expected on or off');
}

function orderingFlag(raw: string | undefined): Ordering {
  if (raw === undefined) return 'adaptive';
  if ((ORDERINGS as readonly string[]).includes(raw)) return raw as Ordering;
  throw new ConfigError('--ordering: expected strict, adaptive or key');
}

function intFlag(raw: string | undefined, flag: string, dflt: number, min: number, max: number): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) throw new ConfigError(`${flag}: expected an integer from ${min} to ${max}`);
  return n;
}

/** The daemon's flags (also accepted by `switchover`, so that a unit's command line can be pasted). */
export const DAEMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  debug: { type: 'boolean', short: 'd' },
  reload: { type: 'boolean' },
  'src-prefix': { type: 'string' },
  'dst-prefix': { type: 'string' },
  strip: { type: 'boolean' },
  'src-ignore-keys-regex': { type: 'string' },
  port: { type: 'string' },
  'listen-address': { type: 'string' },
  'allow-mass-delete': { type: 'boolean' },
  'mass-delete-ratio': { type: 'string' },
  'write-concurrency': { type: 'string' },
  'checkpoint-ms': { type: 'string' },
  'quiet-rearm-ms': { type: 'string' },
  pipeline: { type: 'string' },
  ordering: { type: 'string' },
  ...CLUSTER_FLAGS,
  'src-api': { type: 'string' },
  'dst-api': { type: 'string' },
  'dst-max-txn-ops': { type: 'string' },
  ha: { type: 'boolean' },
  'instance-id': { type: 'string' },
  'ha-ttl': { type: 'string' },
  'src-request-budget': { type: 'string' },
  'audit-interval': { type: 'string' },
  'lag-growth-ms': { type: 'string' },
} as const;

export type Parsed = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: Config };

export function parseConfig(argv: string[]): Parsed {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: DAEMON_OPTIONS,
    });
  } catch (err) {
    // parseArgs messages name the flag but never a value, so they cannot leak a password.
    throw new ConfigError((err as Error).message.split('\n')[0] ?? 'invalid arguments');
  }
  const v = parsed.values;
  if (v.help) return { kind: 'help' };
  if (v.version) return { kind: 'version' };
  if (parsed.positionals.length !== 2) {
    throw new ConfigError(`expected exactly two arguments, SRC and DST (got ${parsed.positionals.length}); see --help`);
  }
  const [srcRaw, dstRaw] = parsed.positionals as [string, string];
  const port = intFlag(v.port, '--port', 8000, 0, 65535);
  const srcApi = apiFlag(v['src-api'], '--src-api');
  const dstApi = apiFlag(v['dst-api'], '--dst-api');
  checkApis(srcApi, dstApi);
  const ratioRaw = v['mass-delete-ratio'];
  const massDeleteRatio = ratioRaw === undefined ? 0.5 : Number(ratioRaw);
  if (!(massDeleteRatio >= 0 && massDeleteRatio <= 1)) throw new ConfigError(`--mass-delete-ratio: expected a number from 0 to 1`);
  const config: Config = {
    src: clusterFrom(srcRaw, 'SRC', v, 'src'),
    dst: clusterFrom(dstRaw, 'DST', v, 'dst'),
    srcPrefix: parsePrefix(v['src-prefix'] ?? '/', '--src-prefix'),
    dstPrefix: parsePrefix(v['dst-prefix'] ?? '/replica', '--dst-prefix'),
    strip: v.strip ?? false,
    ignoreRegex: v['src-ignore-keys-regex'] === undefined ? undefined : compileIgnoreRegex(v['src-ignore-keys-regex']),
    reload: v.reload ?? false,
    port,
    listenAddress: v['listen-address'] ?? '0.0.0.0',
    debug: v.debug ?? false,
    allowMassDelete: v['allow-mass-delete'] ?? false,
    massDeleteRatio,
    writeConcurrency: intFlag(v['write-concurrency'], '--write-concurrency', 16, 1, 256),
    checkpointMs: intFlag(v['checkpoint-ms'], '--checkpoint-ms', 100, 10, 60_000),
    pipeline: pipelineFlag(v.pipeline),
    ordering: orderingFlag(v.ordering),
    quietRearmMs: intFlag(v['quiet-rearm-ms'], '--quiet-rearm-ms', srcApi === 'v3' ? 1000 : 100, 50, 60_000),
    srcApi,
    dstApi,
    dstMaxTxnOps: intFlag(v['dst-max-txn-ops'], '--dst-max-txn-ops', 128, 4, 100_000),
    ha: v.ha ?? false,
    instanceId: v['instance-id'] ?? `${hostname()}:${port}`,
    haTtl: intFlag(v['ha-ttl'], '--ha-ttl', 10, 2, 3_600),
    srcRequestBudget: intFlag(v['src-request-budget'], '--src-request-budget', DEFAULT_SOURCE_BUDGET_PER_SECOND, 0, 1_000),
    auditIntervalSeconds: intFlag(v['audit-interval'], '--audit-interval', 300, 0, 86_400),
    lagGrowthMs: intFlag(v['lag-growth-ms'], '--lag-growth-ms', 10_000, 1_000, 600_000),
  };
  if (!/^[\x21-\x7e]{1,128}$/.test(config.instanceId)) throw new ConfigError('--instance-id: 1 to 128 printable characters, no spaces');

  const sameCluster = config.src.members.some((m) => config.dst.members.some((d) => d.origin === m.origin));
  if (sameCluster && overlaps(config)) {
    throw new ConfigError('SRC and DST are the same cluster and the prefixes overlap: the mirror would feed on its own writes');
  }
  return { kind: 'run', config: Object.freeze(config) };
}

function overlaps(c: Config): boolean {
  const dstRoot = c.strip ? c.dstPrefix : c.dstPrefix === '/' ? c.srcPrefix : c.dstPrefix + (c.srcPrefix === '/' ? '' : c.srcPrefix);
  const within = (a: string, b: string) => b === '/' || a === b || a.startsWith(b + '/');
  return within(dstRoot, c.srcPrefix) || within(c.srcPrefix, dstRoot);
}
