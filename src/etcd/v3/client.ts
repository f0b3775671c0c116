// The only module that speaks etcd's v3 API (gRPC): one channel per cluster member. Unary calls go to the current
// member and fail over to the next; watches are one bidi stream each and resume by themselves from the last event
// they delivered; lease keepalives share one lazily opened stream. Credentials become a token (metadata `token`)
// and never appear in an error or log line.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ClusterIdMismatchError, MirrorError, isRetryable } from '../errors.js';
import type { AuthKind, Cluster, CostSample } from '../endpoint.js';
import { CompactedError, TooManyOpsError, V3AuthError, V3RequestError } from './errors.js';


export interface KeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
  /** Decimal lease id ('0' = none): int64 ids do not all fit in a JS number. */
  lease: string;
}

export interface V3Event {
  type: 'put' | 'delete';
  kv: KeyValue;
  prevKv?: KeyValue;
}

export type WatchMessage =
  /** One watch response (fragments merged): never empty, and never splits a revision. */
  | { kind: 'events'; revision: number; events: V3Event[] }
  /** A progress notification: the header revision of an empty response. */
  | { kind: 'progress'; revision: number };

export interface Compare {
  key: Buffer;
  target: 'create' | 'mod' | 'version' | 'value' | 'lease';
  result: 'equal' | 'greater' | 'less' | 'not_equal';
  /** A number for create/mod/version, a Buffer for value, a decimal lease id for lease. */
  value: number | Buffer | string;
}

export type TxnOp =
  | { put: { key: Buffer; value: Buffer; lease?: string } }
  | { deleteRange: { key: Buffer; rangeEnd?: Buffer } }
  | { range: { key: Buffer; rangeEnd?: Buffer } };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** One per operation of the branch taken: `range` for a range, `deleted` for a delete, empty for a put. */
  responses: Array<{ range?: { kvs: KeyValue[] }; deleted?: number }>;
}

export interface V3Watch extends AsyncIterable<WatchMessage> {
  /** Ask the server for a progress notification now (WatchProgressRequest); a no-op if the stream is not open. */
  requestProgress(): void;
  /** Ends the iteration (a for-await loop exits normally) and cancels the stream. */
  close(): void;
}

/** etcd's range_end for "every key starting with `prefix`"; [0] (all keys from `prefix` on) when none is shorter. */
export function prefixEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = prefix[i]! + 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** Simple tokens expire 300 s after their last use by default; a fresh one well before that. */
const TOKEN_MAX_AGE_MS = 240_000;
const WATCH_BACKOFF_MIN_MS = 100;
const WATCH_BACKOFF_MAX_MS = 2_000;
/** Watch responses queued for a slow consumer before the stream is paused (gRPC flow control holds the rest). */
const WATCH_QUEUE_HIGH_WATER = 16;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Pings notice a blackholed connection under a watch or keepalive stream. Only while a call is active: etcd
  // allows no pings without one (PermitWithoutStream=false) and answers an idle pinger with GOAWAY too_many_pings.
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 0,
  // A catch-up watch response or a big range can exceed gRPC's 4 MiB default.
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
  // A member that comes back is used again within seconds, not after gRPC's default of up to 120 s.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2_000,
};

const PROTO_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }; // bytes: Buffer by default

/** rpc.proto beside the source, or (for compiled code in dist/src/etcd/v3/) the source tree's copy. */
function protoFile(): string {
  const fromDist = fileURLToPath(new URL('../../../../src/etcd/v3/proto/rpc.proto', import.meta.url));
  return existsSync(fromDist) ? fromDist : fileURLToPath(new URL('./proto/rpc.proto', import.meta.url));
}

type Service = 'KV' | 'Watch' | 'Lease' | 'Maintenance' | 'Auth';
type Method = protoLoader.MethodDefinition<object, object>;
let definitions: protoLoader.PackageDefinition | undefined;

function methodOf(service: Service, name: string): Method {
  definitions ??= protoLoader.loadSync(protoFile(), PROTO_OPTIONS);
  const method = (definitions[`etcdserverpb.${service}`] as protoLoader.ServiceDefinition | undefined)?.[name];
  if (!method) throw new Error(`etcdserverpb.${service}/${name} missing from rpc.proto`);
  return method;
}

// Messages as proto-loader decodes them (snake_case, int64 as decimal strings, bytes as Buffers, defaults set).
interface RawHeader { cluster_id: string; member_id: string; revision: string }
interface RawKeyValue { key: Buffer; value: Buffer; create_revision: string; mod_revision: string; version: string; lease: string }
interface RawEvent { type: string; kv: RawKeyValue | null; prev_kv: RawKeyValue | null }
interface RawRangeResponse { header: RawHeader | null; kvs: RawKeyValue[]; more: boolean; count: string }
interface RawWatchResponse {
  header: RawHeader | null;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  fragment: boolean;
  events: RawEvent[];
}
interface RawResponseOp {
  response: 'response_range' | 'response_put' | 'response_delete_range' | 'response_txn';
  response_range: RawRangeResponse | null;
  response_delete_range: { deleted: string } | null;
}

function keyValueOf(raw: RawKeyValue): KeyValue {
  return {
    key: raw.key,
    value: raw.value,
    createRevision: Number(raw.create_revision),
    modRevision: Number(raw.mod_revision),
    version: Number(raw.version),
    lease: raw.lease,
  };
}

function eventOf(raw: RawEvent): V3Event {
  const event: V3Event = { type: raw.type === 'Delete' ? 'delete' : 'put', kv: keyValueOf(raw.kv!) };
  if (raw.prev_kv) event.prevKv = keyValueOf(raw.prev_kv);
  return event;
}

const COMPARE_TARGET = { version: 0, create: 1, mod: 2, value: 3, lease: 4 } as const;
const COMPARE_RESULT = { equal: 0, greater: 1, less: 2, not_equal: 3 } as const;
const COMPARE_FIELD = { version: 'version', create: 'create_revision', mod: 'mod_revision', value: 'value', lease: 'lease' } as const;

/**
 * The key fields of a request. An absent range_end means one key; an empty one, sent, means "every key from `key`
 * on" to a Range served without raft (etcd tells nil from empty there), so an empty range_end is never sent.
 */
function keyRange(key: Buffer, rangeEnd: Buffer | undefined): { key: Buffer; range_end?: Buffer } {
  return rangeEnd && rangeEnd.length > 0 ? { key, range_end: rangeEnd } : { key };
}

function requestOpOf(op: TxnOp): object {
  if ('put' in op) return { request_put: { key: op.put.key, value: op.put.value, lease: op.put.lease ?? '0' } };
  if ('deleteRange' in op) return { request_delete_range: keyRange(op.deleteRange.key, op.deleteRange.rangeEnd) };
  return { request_range: keyRange(op.range.key, op.range.rangeEnd) };
}

// ---- errors ---------------------------------------------------------------------------------------------------

interface GrpcStatus { code: number; details: string }

const isGrpcStatus = (err: unknown): err is GrpcStatus =>
  typeof err === 'object' && err !== null && typeof (err as GrpcStatus).code === 'number' && typeof (err as GrpcStatus).details === 'string';

/** Replies after which a new token may succeed: expired or unknown (member restarted), or none sent yet. */
const TOKEN_STALE = /invalid auth token|user name is empty|revision of auth store is old/;
const AUTH_REFUSED = /authentication failed|permission denied|invalid auth token|user name is empty|user name not found/;
const TRANSIENT = /leader changed|no leader|too many requests|request timed out|RST_STREAM/;
const COMPACTED = 'required revision has been compacted';

function errorFrom(status: GrpcStatus, origin: string, what: string): MirrorError {
  const message = `${origin}: ${what}: ${status.details || grpc.status[status.code]}`;
  if (status.details.includes('too many operations in txn request')) return new TooManyOpsError(message);
  if (status.code === grpc.status.PERMISSION_DENIED || status.code === grpc.status.UNAUTHENTICATED || AUTH_REFUSED.test(status.details)) {
    return new V3AuthError(message);
  }
  const transient = status.code === grpc.status.UNAVAILABLE || status.code === grpc.status.DEADLINE_EXCEEDED || TRANSIENT.test(status.details);
  return new V3RequestError(message, status.code, transient);
}

/** Failures that prove the request never reached a server: a write may be sent again. */
const provenNotSent = (s: GrpcStatus): boolean =>
  s.code === grpc.status.UNAVAILABLE && (s.details.startsWith('No connection established') || s.details === 'Stream refused by server');

const isCompactedReply = (err: unknown): boolean =>
  err instanceof V3RequestError && err.grpcCode === grpc.status.OUT_OF_RANGE && err.message.includes(COMPACTED);

/** A watch cancel reason is a gRPC error's text ("rpc error: code = PermissionDenied desc = etcdserver: ..."). */
function errorFromCancel(reason: string, origin: string): MirrorError {
  const m = /code = (\w+) desc = (.*)$/s.exec(reason);
  const codeName = (m?.[1] ?? '').replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase() as keyof typeof grpc.status;
  const code = typeof grpc.status[codeName] === 'number' ? (grpc.status[codeName] as number) : grpc.status.UNKNOWN;
  return errorFrom({ code, details: m?.[2] ?? (reason || 'canceled by the server without a reason') }, origin, 'watch canceled');
}

// ---- members ----------------------------------------------------------------------------------------------------

class Member {
  readonly client: grpc.Client;
  constructor(
    readonly origin: string,
    credentials: grpc.ChannelCredentials,
  ) {
    // origin is scheme://host:port with the port always spelled out (URL.host would drop a default 80 or 443).
    this.client = new grpc.Client(origin.replace(/^https?:\/\//, ''), credentials, CHANNEL_OPTIONS);
  }

  unary<Res>(method: Method, request: object, metadata: grpc.Metadata, timeoutMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res as Res),
      );
    });
  }

  stream<Res>(method: Method, metadata: grpc.Metadata): grpc.ClientDuplexStream<object, Res> {
    return this.client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize as (b: Buffer) => Res, metadata);
  }
}

/** What a watch needs from its client. */
interface StreamHost {
  /** The member to use now and the metadata (token) for a new stream. */
  connect(): Promise<{ member: Member; metadata: grpc.Metadata }>;
  memberFailed(member: Member): void;
  checkCluster(member: Member, header: RawHeader | null): void;
  /** Forget the token if it is this one, so the next stream authenticates again. */
  dropToken(metadata: grpc.Metadata): void;
  readonly authenticates: boolean;
  forget(watch: WatchStream): void;
}

/** `value` undefined: the cluster has auth disabled. `at`: performance.now() when it was requested. */
interface Token { value: string | undefined; at: number }
interface Waiter { resolve(ttl: number): void; reject(err: Error): void; timer: NodeJS.Timeout }
interface KeepAliveStream { call: grpc.ClientDuplexStream<object, { ID: string; TTL: string }>; member: Member; waiting: Map<string, Waiter[]> }

type CallKind = 'read' | 'write';

export class V3Client {
  readonly origin: string;
  readonly #members: Member[];
  readonly #timeoutMs: number;
  readonly #credentials: { username: string; password: string } | undefined;
  #current = 0;
  #clusterId: { id: string; member: string } | undefined;
  #token: Token | undefined;
  #authenticating: Promise<Token> | undefined;
  #keepAlive: KeepAliveStream | undefined;
  readonly #watches = new Set<WatchStream>();
  #closed = false;
  readonly #hasCert: boolean;
  #tokenExchangeMs: number | null = null;

  constructor(cluster: Cluster, opts: { requestTimeoutMs?: number } = {}) {
    this.origin = cluster.origin;
    this.#timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const https = cluster.members[0]?.origin.startsWith('https:') ?? false;
    const credentials = https
      ? grpc.credentials.createSsl(cluster.tls?.ca ?? null, cluster.tls?.key ?? null, cluster.tls?.cert ?? null)
      : grpc.credentials.createInsecure();
    this.#members = cluster.members.map((m) => new Member(m.origin, credentials));
    const withUser = cluster.members.find((m) => m.username !== undefined);
    if (withUser) this.#credentials = { username: withUser.username!, password: withUser.password ?? '' };
    this.#hasCert = cluster.tls?.cert !== undefined;
  }

  /** 'token' with a user: the password is checked once per token (renewed every few minutes), not per request. */
  get auth(): AuthKind {
    return this.#credentials ? 'token' : this.#hasCert ? 'certificate' : 'none';
  }

  get user(): string | undefined {
    return this.#credentials?.username;
  }

  /** How long the last password → token exchange took (the server's bcrypt check), ms; null before one. */
  get tokenExchangeMs(): number | null {
    return this.#tokenExchangeMs;
  }

  /**
   * Times an anonymous Status call and then an authenticated count of `probeKey`, one after the other: what
   * authentication adds per request once a token is held.
   */
  async costSample(probeKey: Buffer): Promise<CostSample> {
    await this.#metadata(); // a token exchange (and the connection) is timed on its own
    let at = performance.now();
    await this.#unary('Maintenance', 'Status', {}, 'read', { anonymous: true });
    const baselineMs = performance.now() - at;
    at = performance.now();
    await this.range(probeKey, { countOnly: true, serializable: true });
    return { authenticatedMs: performance.now() - at, baselineMs };
  }

  async status(): Promise<{ revision: number; clusterId: string; memberId: string; version: string; dbSize: number }> {
    const res = await this.#unary<{ header: RawHeader; version: string; dbSize: string }>('Maintenance', 'Status', {}, 'read');
    return {
      revision: Number(res.header.revision),
      clusterId: hexId(res.header.cluster_id),
      memberId: hexId(res.header.member_id),
      version: res.version,
      dbSize: Number(res.dbSize),
    };
  }

  async range(
    key: Buffer,
    opts: {
      rangeEnd?: Buffer;
      revision?: number;
      limit?: number;
      keysOnly?: boolean;
      /** Only `count` (every key in range), no keys. */
      countOnly?: boolean;
      /** Highest mod revision first (with limit 1: the range's latest change; `count` still counts all). */
      sortByModDescending?: boolean;
      serializable?: boolean;
    } = {},
  ): Promise<{ revision: number; kvs: KeyValue[]; more: boolean; count: number }> {
    const request = {
      ...keyRange(key, opts.rangeEnd),
      revision: opts.revision ?? 0,
      limit: opts.limit ?? 0,
      keys_only: opts.keysOnly ?? false,
      count_only: opts.countOnly ?? false,
      ...(opts.sortByModDescending ? { sort_order: 'DESCEND', sort_target: 'MOD' } : {}),
      serializable: opts.serializable ?? false,
    };
    let res: RawRangeResponse;
    try {
      res = await this.#unary<RawRangeResponse>('KV', 'Range', request, 'read');
    } catch (err) {
      if (isCompactedReply(err) && opts.revision !== undefined) {
        throw new CompactedError(await this.#compactRevision(key, opts.rangeEnd, opts.revision, err), (err as Error).message);
      }
      throw err;
    }
    return { revision: Number(res.header!.revision), kvs: res.kvs.map(keyValueOf), more: res.more, count: Number(res.count) };
  }

  /** Every key in [key, rangeEnd), in pages of pageSize, all pinned at one revision (the first page's header revision unless given). */
  async rangeAll(key: Buffer, rangeEnd: Buffer, opts: { revision?: number; pageSize?: number } = {}): Promise<{ revision: number; kvs: KeyValue[] }> {
    const pageSize = opts.pageSize ?? 1000;
    let revision = opts.revision;
    let from = key;
    const kvs: KeyValue[] = [];
    for (;;) {
      const page = await this.range(from, { rangeEnd, revision, limit: pageSize });
      // The header carries the store's current revision, so it pins only the first page of an unpinned scan.
      revision ??= page.revision;
      for (const kv of page.kvs) kvs.push(kv);
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || !last) return { revision, kvs };
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  async put(key: Buffer, value: Buffer, opts: { lease?: string } = {}): Promise<{ revision: number }> {
    const res = await this.#unary<{ header: RawHeader }>('KV', 'Put', { key, value, lease: opts.lease ?? '0' }, 'write');
    return { revision: Number(res.header.revision) };
  }

  async deleteRange(key: Buffer, rangeEnd?: Buffer): Promise<{ revision: number; deleted: number }> {
    const res = await this.#unary<{ header: RawHeader; deleted: string }>('KV', 'DeleteRange', keyRange(key, rangeEnd), 'write');
    return { revision: Number(res.header.revision), deleted: Number(res.deleted) };
  }

  async txn(req: { compare?: Compare[]; success: TxnOp[]; failure?: TxnOp[] }): Promise<TxnResult> {
    const request = {
      compare: (req.compare ?? []).map((c) => ({
        key: c.key,
        target: COMPARE_TARGET[c.target],
        result: COMPARE_RESULT[c.result],
        [COMPARE_FIELD[c.target]]: c.value,
      })),
      success: req.success.map(requestOpOf),
      failure: (req.failure ?? []).map(requestOpOf),
    };
    const res = await this.#unary<{ header: RawHeader; succeeded: boolean; responses: RawResponseOp[] }>('KV', 'Txn', request, 'write');
    return {
      succeeded: res.succeeded,
      revision: Number(res.header.revision),
      responses: res.responses.map((r) => {
        if (r.response === 'response_range') return { range: { kvs: r.response_range!.kvs.map(keyValueOf) } };
        if (r.response === 'response_delete_range') return { deleted: Number(r.response_delete_range!.deleted) };
        return {};
      }),
    };
  }

  /** Compacting to a revision at or below the current compaction resolves: that history is gone either way. */
  async compact(revision: number, physical = false): Promise<void> {
    try {
      await this.#unary('KV', 'Compact', { revision, physical }, 'write');
    } catch (err) {
      if (!isCompactedReply(err)) throw err;
    }
  }

  async leaseGrant(ttlSeconds: number, id?: string): Promise<{ id: string; ttl: number }> {
    const res = await this.#unary<{ ID: string; TTL: string }>('Lease', 'LeaseGrant', { TTL: ttlSeconds, ID: id ?? '0' }, 'write');
    return { id: res.ID, ttl: Number(res.TTL) };
  }

  /** An unknown lease (already expired or revoked) is not an error. */
  /** Resolves with the revision that deleted the lease's keys (0 when there was no such lease). */
  async leaseRevoke(id: string): Promise<{ revision: number }> {
    try {
      // Idempotent (a second revoke finds no lease), so it may be retried like a read.
      const res = await this.#unary<{ header: { revision: string } }>('Lease', 'LeaseRevoke', { ID: id }, 'read');
      return { revision: Number(res.header.revision) };
    } catch (err) {
      if (!(err instanceof V3RequestError && err.grpcCode === grpc.status.NOT_FOUND)) throw err;
      return { revision: 0 };
    }
  }

  /** ttl is -1 when the lease has expired or never existed. */
  async leaseTimeToLive(id: string): Promise<{ ttl: number; grantedTtl: number }> {
    const res = await this.#unary<{ TTL: string; grantedTTL: string }>('Lease', 'LeaseTimeToLive', { ID: id, keys: false }, 'read');
    return { ttl: Number(res.TTL), grantedTtl: Number(res.grantedTTL) };
  }

  /** One keepalive over a shared, lazily opened LeaseKeepAlive stream; resolves with the new TTL (0 or less: lease gone). */
  async leaseKeepAliveOnce(id: string): Promise<number> {
    this.#ensureOpen('LeaseKeepAlive');
    let lastError: MirrorError | undefined;
    // A keepalive is idempotent: a failed one is sent again on a new stream, once per member.
    for (let tried = 0; tried < this.#members.length; tried++) {
      const stream = this.#keepAlive ?? (await this.#openKeepAlive());
      try {
        return await this.#keepAliveOn(stream, id);
      } catch (err) {
        if (!(err instanceof MirrorError) || !isRetryable(err)) throw err;
        lastError = err;
      }
    }
    throw lastError!;
  }

  /** Watches [key, rangeEnd) from startRevision (at least 1). Iterate it once; it resumes by itself after a retryable failure. */
  watch(key: Buffer, rangeEnd: Buffer | undefined, opts: { startRevision: number; progressNotify?: boolean; prevKv?: boolean }): V3Watch {
    // Revision 0 ("from now") has no safe resume point before the first event.
    if (!Number.isSafeInteger(opts.startRevision) || opts.startRevision < 1) throw new RangeError(`watch: startRevision must be a positive integer (got ${opts.startRevision})`);
    this.#ensureOpen('watch');
    const watch = new WatchStream(this.#streamHost(), {
      ...keyRange(key, rangeEnd),
      progress_notify: opts.progressNotify ?? true,
      prev_kv: opts.prevKv ?? false,
      fragment: true,
    }, opts.startRevision);
    this.#watches.add(watch);
    return watch;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const w of [...this.#watches]) w.close();
    this.#keepAlive?.call.cancel();
    for (const m of this.#members) m.client.close();
  }

  // ---- internals ------------------------------------------------------------------------------------------------

  /**
   * One call, failing over to the next member on UNAVAILABLE or DEADLINE_EXCEEDED, each member tried once. A write
   * is sent again only when it provably never left (no connection established).
   */
  async #unary<Res>(service: Service, name: string, request: object, kind: CallKind, opts: { what?: string; anonymous?: boolean } = {}): Promise<Res> {
    const method = methodOf(service, name);
    const what = opts.what ?? name;
    let tokenRenewed = false;
    let lastError: MirrorError | undefined;
    for (let tried = 0; tried < this.#members.length; ) {
      this.#ensureOpen(what);
      const member = this.#members[this.#current]!;
      const metadata = opts.anonymous ? new grpc.Metadata() : await this.#metadata();
      try {
        const res = await member.unary<Res & { header?: RawHeader | null }>(method, request, metadata, this.#timeoutMs);
        this.#checkCluster(member, res.header ?? null);
        return res;
      } catch (err) {
        if (!isGrpcStatus(err)) throw err;
        if (!opts.anonymous && !tokenRenewed && this.#credentials && TOKEN_STALE.test(err.details)) {
          tokenRenewed = true;
          this.#dropToken(metadata);
          continue;
        }
        lastError = errorFrom(err, member.origin, what);
        if (err.code !== grpc.status.UNAVAILABLE && err.code !== grpc.status.DEADLINE_EXCEEDED) throw lastError;
        this.#memberFailed(member);
        // A write may have been applied after a timeout or a dropped connection: the caller decides about a retry.
        if (kind === 'write' && !provenNotSent(err)) throw lastError;
        tried++;
      }
    }
    throw lastError!;
  }

  #ensureOpen(what: string): void {
    if (this.#closed) throw new V3RequestError(`${this.origin}: ${what}: client closed`, grpc.status.CANCELLED, false);
  }

  #memberFailed(member: Member): void {
    // Several calls may fail on the same member at once: move on once, not once per call.
    if (this.#members[this.#current] === member) this.#current = (this.#current + 1) % this.#members.length;
  }

  /** Every member must belong to one cluster: revisions of another cluster mean nothing here. */
  #checkCluster(member: Member, header: RawHeader | null): void {
    if (!header || header.cluster_id === '0') return;
    if (this.#clusterId === undefined) this.#clusterId = { id: header.cluster_id, member: member.origin };
    else if (this.#clusterId.id !== header.cluster_id) {
      throw new ClusterIdMismatchError(
        `${member.origin} belongs to cluster ${hexId(header.cluster_id)}, but ${this.#clusterId.member} to cluster ${hexId(this.#clusterId.id)}: the URLs given are not members of one cluster`,
      );
    }
  }

  async #metadata(): Promise<grpc.Metadata> {
    const metadata = new grpc.Metadata();
    if (!this.#credentials) return metadata;
    if (!this.#token || performance.now() - this.#token.at >= TOKEN_MAX_AGE_MS) {
      this.#authenticating ??= this.#authenticate().finally(() => (this.#authenticating = undefined));
      this.#token = await this.#authenticating;
    }
    if (this.#token.value !== undefined) metadata.set('token', this.#token.value);
    return metadata;
  }

  #dropToken(metadata: grpc.Metadata): void {
    // Only the token that failed: a concurrent call may have fetched a new one meanwhile.
    if (this.#token && this.#token.value === metadata.get('token')[0]) this.#token = undefined;
  }

  async #authenticate(): Promise<Token> {
    const { username, password } = this.#credentials!;
    const at = performance.now(); // monotonic: a wall-clock step must not keep an old token alive
    try {
      const res = await this.#unary<{ token: string }>('Auth', 'Authenticate', { name: username, password }, 'read', {
        anonymous: true,
        what: `authenticate as user "${username}"`,
      });
      this.#tokenExchangeMs = performance.now() - at;
      return { value: res.token, at };
    } catch (err) {
      // Credentials for a cluster without auth are not an error (etcd's Go client does the same); checked again later.
      if (err instanceof V3RequestError && err.grpcCode === grpc.status.FAILED_PRECONDITION && err.message.includes('authentication is not enabled')) {
        return { value: undefined, at };
      }
      throw err;
    }
  }

  #streamHost(): StreamHost {
    return {
      connect: async () => {
        const metadata = await this.#metadata();
        return { member: this.#members[this.#current]!, metadata };
      },
      memberFailed: (member) => this.#memberFailed(member),
      checkCluster: (member, header) => this.#checkCluster(member, header),
      dropToken: (metadata) => this.#dropToken(metadata),
      authenticates: this.#credentials !== undefined,
      forget: (watch) => this.#watches.delete(watch),
    };
  }

  async #openKeepAlive(): Promise<KeepAliveStream> {
    const metadata = await this.#metadata();
    // Another caller may have opened one while we waited for the token.
    if (this.#keepAlive) return this.#keepAlive;
    const member = this.#members[this.#current]!;
    const stream: KeepAliveStream = { call: member.stream(methodOf('Lease', 'LeaseKeepAlive'), metadata), member, waiting: new Map() };
    stream.call.on('data', (res: { ID: string; TTL: string }) => {
      const waiters = stream.waiting.get(res.ID);
      const waiter = waiters?.shift();
      if (!waiter) return;
      if (waiters!.length === 0) stream.waiting.delete(res.ID);
      clearTimeout(waiter.timer);
      waiter.resolve(Number(res.TTL));
    });
    stream.call.on('error', () => {}); // handled on 'status', which follows every 'error'
    stream.call.on('status', (s: grpc.StatusObject) => {
      const err = s.code === grpc.status.OK
        ? new V3RequestError(`${member.origin}: LeaseKeepAlive stream ended by the server`, grpc.status.UNAVAILABLE, true)
        : errorFrom(s, member.origin, 'LeaseKeepAlive');
      this.#dropKeepAlive(stream, err);
    });
    this.#keepAlive = stream;
    return stream;
  }

  #keepAliveOn(stream: KeepAliveStream, id: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        // No answer in time: the stream is presumed wedged; drop it so the next keepalive opens a new one.
        timer: setTimeout(
          () => this.#dropKeepAlive(stream, new V3RequestError(`${stream.member.origin}: LeaseKeepAlive: no answer within ${this.#timeoutMs} ms`, grpc.status.DEADLINE_EXCEEDED, true)),
          this.#timeoutMs,
        ),
      };
      const waiters = stream.waiting.get(id);
      if (waiters) waiters.push(waiter);
      else stream.waiting.set(id, [waiter]);
      stream.call.write({ ID: id });
    });
  }

  #dropKeepAlive(stream: KeepAliveStream, err: MirrorError): void {
    if (this.#keepAlive === stream) this.#keepAlive = undefined;
    if (isRetryable(err)) this.#memberFailed(stream.member);
    for (const waiters of stream.waiting.values()) {
      for (const w of waiters) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    stream.waiting.clear();
    stream.call.cancel();
  }

  /** For a Range refused as compacted: the compaction revision, which only a watch cancel reports. */
  async #compactRevision(key: Buffer, rangeEnd: Buffer | undefined, revision: number, rangeError: unknown): Promise<number> {
    const probe = this.watch(key, rangeEnd, { startRevision: revision, progressNotify: false });
    try {
      await probe[Symbol.asyncIterator]().next();
    } catch (err) {
      if (err instanceof CompactedError) return err.compactRevision;
      throw err;
    } finally {
      probe.close();
    }
    throw rangeError; // the history came back: cannot happen, but then the Range error is all we know
  }
}

/** Cluster and member ids as etcd prints them (hex), the form v2's X-Etcd-Cluster-Id uses too. */
const hexId = (decimal: string): string => BigInt(decimal).toString(16);

/**
 * One watch: a bidi Watch stream, re-created after a retryable failure from the revision after the last event
 * delivered (never from a header or progress revision: a catch-up response's header carries the store's current
 * revision, and etcd 3.4.23's progress notifications can run ahead of its events).
 */
class WatchStream implements V3Watch {
  readonly #host: StreamHost;
  readonly #create: object;
  readonly #startRevision: number;
  #call: grpc.ClientDuplexStream<object, RawWatchResponse> | undefined;
  #queue: WatchMessage[] = [];
  #wake: (() => void) | undefined;
  #failure: Error | undefined;
  #closed = false;
  #lastEventRevision = 0;
  #fragments: RawEvent[] = [];
  #backoffMs = WATCH_BACKOFF_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #tokenRenewed = false;

  constructor(host: StreamHost, create: object, startRevision: number) {
    this.#host = host;
    this.#create = create;
    this.#startRevision = startRevision;
    void this.#open();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchMessage, void, undefined> {
    try {
      for (;;) {
        if (this.#closed) return;
        const message = this.#queue.shift();
        if (message) {
          if (this.#queue.length < WATCH_QUEUE_HIGH_WATER) this.#call?.resume();
          yield message;
          continue;
        }
        if (this.#failure) throw this.#failure;
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    } finally {
      this.close();
    }
  }

  requestProgress(): void {
    this.#call?.write({ progress_request: {} });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#stop();
  }

  #resumeRevision(): number {
    return this.#lastEventRevision > 0 ? this.#lastEventRevision + 1 : this.#startRevision;
  }

  async #open(): Promise<void> {
    let connection: Awaited<ReturnType<StreamHost['connect']>>;
    try {
      connection = await this.#host.connect();
    } catch (err) {
      if (err instanceof Error && isRetryable(err)) this.#retryLater();
      else this.#fail(err as Error);
      return;
    }
    if (this.#closed || this.#failure) return;
    const { member, metadata } = connection;
    const call = member.stream<RawWatchResponse>(methodOf('Watch', 'Watch'), metadata);
    this.#call = call;
    call.on('data', (res: RawWatchResponse) => {
      if (this.#call === call) this.#onResponse(res, member, metadata);
    });
    call.on('error', () => {}); // handled on 'status', which follows every 'error'
    call.on('status', (s: grpc.StatusObject) => {
      if (this.#call === call) this.#onStreamEnd(s, member);
    });
    call.write({ create_request: { ...this.#create, start_revision: this.#resumeRevision() } });
  }

  #onResponse(res: RawWatchResponse, member: Member, metadata: grpc.Metadata): void {
    if (res.canceled) return this.#onCanceled(res, member, metadata);
    if (res.created) {
      try {
        this.#host.checkCluster(member, res.header);
      } catch (err) {
        return this.#fail(err as Error);
      }
      this.#backoffMs = WATCH_BACKOFF_MIN_MS;
      this.#tokenRenewed = false;
      return;
    }
    if (res.fragment) {
      this.#fragments = this.#fragments.concat(res.events);
      return;
    }
    const events = this.#fragments.length > 0 ? this.#fragments.concat(res.events) : res.events;
    this.#fragments = [];
    const revision = Number(res.header?.revision ?? 0);
    if (events.length === 0) return this.#push({ kind: 'progress', revision });
    // A revision already delivered (after a resume, or etcd #15275) is dropped whole: a response never splits one.
    const fresh = events.filter((e) => Number(e.kv!.mod_revision) > this.#lastEventRevision);
    const last = fresh[fresh.length - 1];
    if (!last) return;
    this.#lastEventRevision = Number(last.kv!.mod_revision);
    this.#push({ kind: 'events', revision, events: fresh.map(eventOf) });
  }

  #onCanceled(res: RawWatchResponse, member: Member, metadata: grpc.Metadata): void {
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0) {
      return this.#fail(
        new CompactedError(compactRevision, `${member.origin}: watch from revision ${this.#resumeRevision()}: history compacted up to revision ${compactRevision}`),
      );
    }
    // Simple tokens live in a member's memory: after its restart, re-creating the watch with the old one fails here.
    if (this.#host.authenticates && !this.#tokenRenewed && TOKEN_STALE.test(res.cancel_reason)) {
      this.#tokenRenewed = true;
      this.#host.dropToken(metadata);
      this.#stop();
      void this.#open();
      return;
    }
    this.#fail(errorFromCancel(res.cancel_reason, member.origin));
  }

  #onStreamEnd(status: grpc.StatusObject, member: Member): void {
    this.#call = undefined;
    this.#fragments = [];
    if (this.#closed || this.#failure) return;
    // Our own cancels never get here (the call is detached first); Node reports some connection drops as
    // RST_STREAM CANCEL, so a CANCELLED status is a reset like any other.
    const reset = status.code === grpc.status.OK || status.code === grpc.status.CANCELLED;
    const err = reset
      ? new V3RequestError(`${member.origin}: watch stream reset (${status.details || grpc.status[status.code]})`, grpc.status.UNAVAILABLE, true)
      : errorFrom(status, member.origin, 'watch');
    if (!isRetryable(err)) return this.#fail(err);
    this.#host.memberFailed(member);
    this.#retryLater();
  }

  #retryLater(): void {
    if (this.#closed || this.#failure) return;
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(this.#backoffMs * 2, WATCH_BACKOFF_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#open();
    }, delay);
  }

  #push(message: WatchMessage): void {
    this.#queue.push(message);
    if (this.#queue.length >= WATCH_QUEUE_HIGH_WATER) this.#call?.pause();
    this.#wakeConsumer();
  }

  #fail(err: Error): void {
    if (this.#failure || this.#closed) return;
    this.#failure = err;
    this.#stop();
  }

  /** Cancels the current stream and any pending reconnect, and wakes the consumer. */
  #stop(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#fragments = [];
    const call = this.#call;
    this.#call = undefined;
    call?.cancel();
    if (this.#closed || this.#failure) this.#host.forget(this);
    this.#wakeConsumer();
  }

  #wakeConsumer(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
