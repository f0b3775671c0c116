// The only class that speaks etcd's v3 API (gRPC): one channel per cluster member (member.ts). Unary calls go to
// the current member and fail over to the next; watches are one bidi stream each and resume by themselves from the
// last event they delivered (watch.ts); lease keepalives share one lazily opened stream (keepalive.ts). Credentials
// become a token (metadata `token`, auth.ts) and never appear in an error or log line. Messages: proto.ts.
import * as grpc from '@grpc/grpc-js';
import { ClusterIdMismatchError, MirrorError } from '../errors.js';
import type { AuthKind, Cluster, CostSample } from '../endpoint.js';
import { CompactedError, V3RequestError } from './errors.js';
import { errorFrom, isCompactedReply, isGrpcStatus, provenNotSent, TOKEN_STALE } from './grpc-status.js';
import { Member, type Keepalive } from './member.js';
import { COMPARE_FIELD, COMPARE_RESULT, COMPARE_TARGET, keyRange, keyValueOf, methodOf, requestOpOf, type RawHeader, type RawRangeResponse, type RawResponseOp, type Service } from './proto.js';
import type { Compare, KeyValue, TxnOp, TxnResult, V3Watch } from './types.js';
import { WatchStream, type StreamHost } from './watch.js';
import { TokenAuth } from './auth.js';
import { KeepAlives } from './keepalive.js';

export { prefixEnd } from './types.js';
export type { Compare, KeyValue, TxnOp, TxnResult, V3Event, V3Watch, WatchMessage } from './types.js';

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;


type CallKind = 'read' | 'write';

export class V3Client {
  readonly origin: string;
  readonly #members: Member[];
  readonly #timeoutMs: number;
  readonly #auth: TokenAuth;
  readonly #keepAlives: KeepAlives;
  #current = 0;
  #clusterId: { id: string; member: string } | undefined;
  readonly #watches = new Set<WatchStream>();
  #closed = false;
  readonly #hasCert: boolean;

  /** `keepalive`: default a ping after 10 s, given up 5 s later (etcd refuses pings more often than every 5 s). */
  constructor(cluster: Cluster, opts: { requestTimeoutMs?: number; keepalive?: Keepalive } = {}) {
    this.origin = cluster.origin;
    this.#timeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const https = cluster.members[0]?.origin.startsWith('https:') ?? false;
    const credentials = https
      ? grpc.credentials.createSsl(cluster.tls?.ca ?? null, cluster.tls?.key ?? null, cluster.tls?.cert ?? null)
      : grpc.credentials.createInsecure();
    this.#members = cluster.members.map((m) => new Member(m.origin, credentials, opts.keepalive));
    const withUser = cluster.members.find((m) => m.username !== undefined);
    const user = withUser ? { username: withUser.username!, password: withUser.password ?? '' } : undefined;
    this.#auth = new TokenAuth(user, (username, password) =>
      this.#unary<{ token: string }>('Auth', 'Authenticate', { name: username, password }, 'read', { anonymous: true, what: `authenticate as user "${username}"` }).then((r) => r.token),
    );
    this.#keepAlives = new KeepAlives({ ...this.#streamHost(), members: this.#members.length, timeoutMs: this.#timeoutMs });
    this.#hasCert = cluster.tls?.cert !== undefined;
  }

  /** 'token' with a user: the password is checked once per token (renewed every few minutes), not per request. */
  get auth(): AuthKind {
    return this.#auth.credentials ? 'token' : this.#hasCert ? 'certificate' : 'none';
  }

  get user(): string | undefined {
    return this.#auth.credentials?.username;
  }

  /** How long the last password → token exchange took (the server's bcrypt check), ms; null before one. */
  get tokenExchangeMs(): number | null {
    return this.#auth.exchangeMs;
  }

  /**
   * Times an anonymous Status call and then an authenticated count of `probeKey`, one after the other: what
   * authentication adds per request once a token is held.
   */
  async costSample(probeKey: Buffer): Promise<CostSample> {
    await this.#auth.metadata(); // a token exchange (and the connection) is timed on its own
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
    return this.#keepAlives.once(id);
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
    this.#keepAlives.close();
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
      const metadata = opts.anonymous ? new grpc.Metadata() : await this.#auth.metadata();
      try {
        const res = await member.unary<Res & { header?: RawHeader | null }>(method, request, metadata, this.#timeoutMs);
        this.#checkCluster(member, res.header ?? null);
        return res;
      } catch (err) {
        if (!isGrpcStatus(err)) throw err;
        if (!opts.anonymous && !tokenRenewed && this.#auth.credentials && TOKEN_STALE.test(err.details)) {
          tokenRenewed = true;
          this.#auth.drop(metadata);
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

  #streamHost(): StreamHost {
    return {
      connect: async () => {
        const metadata = await this.#auth.metadata();
        return { member: this.#members[this.#current]!, metadata };
      },
      memberFailed: (member) => this.#memberFailed(member),
      checkCluster: (member, header) => this.#checkCluster(member, header),
      dropToken: (metadata) => this.#auth.drop(metadata),
      authenticates: this.#auth.credentials !== undefined,
      forget: (watch) => this.#watches.delete(watch),
    };
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
