// The only module that speaks HTTP to etcd: one undici keep-alive pool per cluster member. Requests go to the
// current member and fail over to the next on a connection failure; every answer must carry the same cluster id,
// and every answer's `Date` header feeds the estimate of the cluster's wall clock (serverNow()).
import { createInterface } from 'node:readline';
import type { Dispatcher } from 'undici';
import { Client, Pool } from './undici.js';
import { ServerClock } from './clock.js';
import { decodeEvent, decodeKeys, header, parseIndex, type EtcdEvent, type KeysResult } from './decode.js';
import { AbortedError, ClusterIdMismatchError, EtcdError, FencedError, KeyNotFoundError, NotADirectoryError, TlsError, TransportError, UnexpectedResponseError, UnreachableError } from '../errors.js';
import type { AuthKind, Cluster, CostSample, Endpoint } from '../endpoint.js';
import { keysPath } from './paths.js';

export interface ClientOptions {
  /** Concurrent connections to this cluster (watches hold one each while they wait). */
  connections?: number;
  /** Per-request timeout for ordinary reads and writes, ms. */
  requestTimeoutMs?: number;
  /** Told of every write (PUT/DELETE) as it is sent and when it answered, with the store index it got when it
   * succeeded: to tell this process's writes from others' by what they wrote. */
  writes?: WriteTracker;
}

export interface WriteTracker {
  /** A write is being sent; returns its sequence number. */
  begin(): number;
  /** It answered: with its store index when it succeeded. */
  end(seq: number, modifiedIndex?: number): void;
  /**
   * The write is about to go onto its connection (it may have waited in a queue since begin()): throwing stops it
   * there, and the write fails with that error.
   */
  dispatching?(): void;
}

/**
 * Runs the tracker's check at the moment undici puts a write on the socket (onRequestStart), not when it was
 * queued: a write that waited behind others, or in a process paused meanwhile, is checked again as it leaves.
 */
class DispatchCheck implements Dispatcher.DispatchHandler {
  // compose() hands interceptors handlers of undici's controller API; everything but the start is passed on.
  constructor(
    private readonly inner: Dispatcher.DispatchHandler,
    private readonly check: () => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    try {
      this.check();
    } catch (err) {
      controller.abort(err as Error);
      return;
    }
    this.inner.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>): void {
    this.inner.onRequestUpgrade?.(...a);
  }

  onResponseStart(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>): void {
    this.inner.onResponseStart?.(...a);
  }

  onResponseData(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseData']>>): void {
    this.inner.onResponseData?.(...a);
  }

  onResponseEnd(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>>): void {
    this.inner.onResponseEnd?.(...a);
  }

  onResponseError(...a: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseError']>>): void {
    this.inner.onResponseError?.(...a);
  }
}

/**
 * Writes applied in the order they were handed over: one connection, on which undici sends each write the moment
 * the one before it is answered (PUT and DELETE are not pipelined: undici keeps them one at a time), so no turn
 * of our event loop sits between two writes. etcd serves a connection's requests one after the other, so a write
 * is applied only after the one before it has been applied and answered.
 */
export interface OrderedLane {
  put(key: string, opts: PutOptions): Promise<KeysResult>;
  delete(key: string, opts?: { signal?: AbortSignal }): Promise<KeysResult>;
  close(): Promise<void>;
}

export interface PutOptions {
  value?: string;
  dir?: boolean;
  /** Seconds; `null` removes an existing TTL (`ttl=` on the wire), `undefined` sends nothing. */
  ttl?: number | null;
  prevExist?: boolean;
  /** Compare-and-swap on the key's modifiedIndex (never 0: etcd treats prevIndex=0 as no condition). */
  prevIndex?: number;
  prevValue?: string;
  /** Reset the TTL without changing the value and without a watch event (needs `ttl`). */
  refresh?: boolean;
  signal?: AbortSignal;
}

export interface WatchHandle {
  /** X-Etcd-Index of the watch: the store index when etcd registered it. */
  etcdIndex: number;
  clusterId: string | undefined;
  /** The event, or null when etcd ended the response without one (re-poll). Rejects on abort or transport loss. */
  event: Promise<EtcdEvent | null>;
  /** Resolves when the first byte of the body has arrived (a history match is written right behind the headers). */
  firstByte: Promise<void>;
}

export interface StreamHandle {
  /** X-Etcd-Index when the stream was registered: it delivers every matching event above it, in order. */
  etcdIndex: number;
  /** Resolves with the next event; rejects once the stream failed or ended (after the buffered events). */
  next(): Promise<EtcdEvent>;
  /** Highest modifiedIndex received so far (buffered or consumed), or etcdIndex before the first event. */
  lastIndex(): number;
}

export const isAborted = (err: unknown): boolean => err instanceof AbortedError;

/** Node/OpenSSL codes of certificate problems: retrying cannot help. */
const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
]);
const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);
const isTlsCode = (code: string): boolean => TLS_CODES.has(code) || code.startsWith('ERR_SSL_');

export class EtcdClient {
  /** The members' origins (no credentials): for messages, logs and pages. */
  readonly origin: string;
  readonly #members: { origin: string; pool: Pool }[];
  readonly #tls: Cluster['tls'];
  #current = 0;
  #clusterId: { id: string; member: string } | undefined;
  readonly #authorization: string | undefined;
  /** A basic-auth header wins over a client certificate in etcd, so a password makes every request pay bcrypt. */
  readonly auth: AuthKind;
  /** The etcd user the requests authenticate as: the URL's user (a certificate's CN is not read here). */
  readonly user: string | undefined;
  readonly #timeoutMs: number;
  readonly #writes: WriteTracker | undefined;
  /** The cluster's wall clock, from the `Date` header of every answer (TTLs are the leader's wall clock). */
  readonly #clock = new ServerClock();

  constructor(target: Endpoint | Cluster, options: ClientOptions = {}) {
    const cluster: Cluster = 'members' in target ? target : { members: [target], origin: target.origin };
    this.origin = cluster.origin;
    this.#timeoutMs = options.requestTimeoutMs ?? 15_000;
    this.#writes = options.writes;
    this.#tls = cluster.tls;
    this.#members = cluster.members.map((m) => ({
      origin: m.origin,
      pool: new Pool(m.origin, {
        connections: options.connections ?? 16,
        keepAliveTimeout: 30_000,
        connect: { timeout: 5_000, ...cluster.tls },
      }),
    }));
    const first = cluster.members[0]!;
    this.#authorization =
      first.username !== undefined ? 'Basic ' + Buffer.from(`${first.username}:${first.password ?? ''}`).toString('base64') : undefined;
    this.user = first.username;
    this.auth = this.#authorization ? 'password' : cluster.tls?.cert ? 'certificate' : 'none';
  }

  /**
   * Times `GET /version` (etcd checks no credentials there, so none are sent) and then an authenticated GET of
   * `probeKey` (a missing key is fine: permissions are checked before the store is read), one after the other on
   * the current member. The difference is what authentication costs the server per request.
   */
  async costSample(probeKey: string, signal?: AbortSignal): Promise<CostSample> {
    const timed = async (fn: () => Promise<unknown>): Promise<number> => {
      const at = performance.now();
      await fn();
      return performance.now() - at;
    };
    const baselineMs = await timed(async () => {
      const res = await this.#request('GET', '/version', { signal, anonymous: true });
      await res.body.text();
    });
    // Missing, or below a key that is not a directory: either way the permission check has been paid for.
    const authenticatedMs = await timed(() =>
      this.get(probeKey, { signal }).catch((err: unknown) => {
        if (!(err instanceof KeyNotFoundError || err instanceof NotADirectoryError)) throw err;
      }),
    );
    return { authenticatedMs, baselineMs };
  }

  async #request(
    method: Dispatcher.HttpMethod,
    path: string,
    opts: { body?: string; signal?: AbortSignal; timeoutMs?: number; via?: Dispatcher; anonymous?: boolean },
  ): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = {};
    if (this.#authorization && !opts.anonymous) headers.authorization = this.#authorization;
    if (opts.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const timeout = opts.timeoutMs ?? this.#timeoutMs;
    // Every request is idempotent, so a connection failure moves on to the next member at once.
    let index = this.#current;
    for (let attempt = 0; ; attempt++) {
      const member = this.#members[index]!;
      const sentAt = Date.now();
      try {
        const res = await this.#checked(opts.via ?? member.pool, method).request({
          method,
          path,
          headers,
          body: opts.body,
          signal: opts.signal,
          headersTimeout: timeout,
          bodyTimeout: timeout,
        });
        const mismatch = this.#checkCluster(member.origin, res.headers);
        if (mismatch) {
          res.body.on('error', () => {}).destroy(); // a watch body may never end: drop the connection, do not drain
          throw mismatch;
        }
        this.#clock.observe(sentAt, Date.now(), header(res.headers, 'date'));
        return res;
      } catch (err) {
        const wrapped = err instanceof ClusterIdMismatchError ? err : this.#wrap(err, opts.signal, member.origin);
        // A lane is bound to its connection: its caller decides what a failure means for the writes behind it.
        if (opts.via || !(wrapped instanceof TransportError) || attempt + 1 >= this.#members.length) throw wrapped;
        index = (index + 1) % this.#members.length;
        // Concurrent failures on the same member move the shared choice once, not back and forth.
        if (this.#current !== index && this.#members[this.#current] === member) this.#current = index;
      }
    }
  }

  /** Writes pass the tracker's dispatch check as they go onto the socket. */
  #checked(dispatcher: Dispatcher, method: Dispatcher.HttpMethod): Dispatcher {
    const check = this.#writes?.dispatching?.bind(this.#writes);
    if (!check || (method !== 'PUT' && method !== 'DELETE')) return dispatcher;
    return dispatcher.compose((dispatch) => (opts, handler) => dispatch(opts, new DispatchCheck(handler, check)));
  }

  /** The cluster's wall clock now, ms since the epoch (estimated from its answers; ours before the first one). */
  serverNow(): number {
    return this.#clock.now();
  }

  /** Estimated (cluster clock − this host's clock), ms; 0 before the first answer. */
  clockOffsetMs(): number {
    return this.#clock.offsetMs();
  }

  #checkCluster(member: string, headers: Dispatcher.ResponseData['headers']): ClusterIdMismatchError | undefined {
    const id = header(headers, 'x-etcd-cluster-id');
    if (id === undefined) return undefined;
    if (this.#clusterId === undefined) this.#clusterId = { id, member };
    else if (this.#clusterId.id !== id) {
      return new ClusterIdMismatchError(
        `${member} belongs to cluster ${id}, but ${this.#clusterId.member} to cluster ${this.#clusterId.id}: the URLs given are not members of one cluster`,
      );
    }
    return undefined;
  }

  #wrap(err: unknown, signal: AbortSignal | undefined, member = this.origin): Error {
    if (signal?.aborted) return new AbortedError('request aborted');
    if (err instanceof FencedError) return err; // stopped by the write tracker's dispatch check
    const code = err instanceof Error && 'code' in err ? String((err as { code: unknown }).code) : undefined;
    const cause = err instanceof Error && err.cause instanceof Error && 'code' in err.cause ? String((err.cause as { code: unknown }).code) : undefined;
    const tls = [code, cause].find((c) => c !== undefined && isTlsCode(c));
    if (tls) return new TlsError(`${member}: TLS verification failed (${tls}): ${(err as Error).message}`, { cause: err });
    // undici and node errors carry host:port at most, never our Authorization header.
    if (code && TIMEOUT_CODES.has(code)) return new UnreachableError(`${member}: ${code} ${(err as Error).message}`, { cause: err });
    if (code) return new TransportError(`${member}: ${code} ${(err as Error).message}`, { cause: err });
    return new TransportError(`${member}: ${String(err)}`, { cause: err });
  }

  async #keys(method: Dispatcher.HttpMethod, path: string, opts: { body?: string; signal?: AbortSignal; timeoutMs?: number; via?: Dispatcher }): Promise<KeysResult> {
    const res = await this.#request(method, path, opts);
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      throw this.#wrap(err, opts.signal);
    }
    return this.#decode(res.statusCode, res.headers, text);
  }

  #decode(status: number, headers: Dispatcher.ResponseData['headers'], text: string): KeysResult {
    try {
      return decodeKeys(status, headers, text);
    } catch (err) {
      if (err instanceof EtcdError) err.setOrigin(this.origin);
      throw err;
    }
  }

  get(key: string, opts: { recursive?: boolean; quorum?: boolean; sorted?: boolean; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<KeysResult> {
    const path = keysPath(key, {
      recursive: opts.recursive || undefined,
      quorum: opts.quorum || undefined,
      sorted: opts.sorted || undefined,
    });
    return this.#keys('GET', path, { signal: opts.signal, timeoutMs: opts.timeoutMs });
  }

  put(key: string, opts: PutOptions = {}, via?: Dispatcher): Promise<KeysResult> {
    const form = new URLSearchParams();
    if (opts.dir) form.set('dir', 'true');
    else if (!opts.refresh) form.set('value', opts.value ?? '');
    if (opts.refresh) form.set('refresh', 'true');
    if (opts.ttl !== undefined) form.set('ttl', opts.ttl === null ? '' : String(opts.ttl));
    if (opts.prevExist !== undefined) form.set('prevExist', String(opts.prevExist));
    if (opts.prevIndex !== undefined) {
      if (opts.prevIndex < 1) throw new RangeError('prevIndex must be at least 1 (etcd ignores prevIndex=0)');
      form.set('prevIndex', String(opts.prevIndex));
    }
    if (opts.prevValue !== undefined) form.set('prevValue', opts.prevValue);
    return this.#written(() => this.#keys('PUT', keysPath(key), { body: form.toString(), signal: opts.signal, via }));
  }

  async #written(write: () => Promise<KeysResult>): Promise<KeysResult> {
    const seq = this.#writes?.begin();
    let index: number | undefined;
    try {
      const r = await write();
      index = r.body.node.modifiedIndex;
      return r;
    } finally {
      if (seq !== undefined) this.#writes!.end(seq, index);
    }
  }

  delete(key: string, opts: { recursive?: boolean; dir?: boolean; prevValue?: string; signal?: AbortSignal } = {}, via?: Dispatcher): Promise<KeysResult> {
    const path = keysPath(key, { recursive: opts.recursive || undefined, dir: opts.dir || undefined, prevValue: opts.prevValue });
    return this.#written(() => this.#keys('DELETE', path, { signal: opts.signal, via }));
  }

  /**
   * An ordered lane to the current member, holding up to `depth` writes (one on the wire, the rest queued behind
   * it). When its connection drops, every write on it fails, the queued ones too (so none is re-sent behind the
   * caller's back); the caller redoes them in order, and the next write opens a new connection.
   */
  orderedLane(depth: number): OrderedLane {
    const member = this.#members[this.#current]!;
    let client: Client | null = null;
    const open = (): Client => {
      if (client) return client;
      const c = new Client(member.origin, { pipelining: depth, keepAliveTimeout: 30_000, connect: { timeout: 5_000, ...this.#tls } });
      // Emitted before undici sends what was queued on a new connection: destroying now fails all of it instead.
      c.on('disconnect', () => {
        if (client === c) client = null;
        c.destroy().catch(() => {});
      });
      client = c;
      return c;
    };
    return {
      put: (key, opts) => this.put(key, opts, open()),
      delete: (key, opts = {}) => this.delete(key, { recursive: true, signal: opts.signal }, open()),
      close: async () => {
        const c = client;
        client = null;
        await c?.destroy();
      },
    };
  }


  /**
   * Long-poll watch. Resolves as soon as etcd has registered the watch (its headers arrive at once, ~1 ms);
   * the event itself arrives later on `event`. The caller bounds the wait by aborting `signal`.
   */
  async watch(key: string, opts: { waitIndex?: number; recursive?: boolean; signal: AbortSignal }): Promise<WatchHandle> {
    const path = keysPath(key, { wait: true, recursive: opts.recursive || undefined, waitIndex: opts.waitIndex });
    const res = await this.#request('GET', path, { signal: opts.signal, timeoutMs: 0 });
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      this.#decode(res.statusCode, res.headers, text); // throws the typed error (401 arrives as HTTP 400)
      throw new UnexpectedResponseError(`watch answered HTTP ${res.statusCode}`, res.statusCode, true);
    }
    const etcdIndex = parseIndex(header(res.headers, 'x-etcd-index'), 'X-Etcd-Index');
    let gotBytes!: () => void;
    const firstByte = new Promise<void>((resolve) => (gotBytes = resolve));
    const event = (async () => {
      // Collected as bytes and decoded once: a character split between two chunks must stay one character.
      const chunks: Buffer[] = [];
      try {
        for await (const chunk of res.body) {
          gotBytes();
          chunks.push(chunk as Buffer);
        }
      } catch (err) {
        throw this.#wrap(err, opts.signal);
      }
      gotBytes();
      const text = (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8').trim();
      return text === '' ? null : decodeEvent(text);
    })();
    event.catch(() => {}); // the caller may abandon it; never an unhandled rejection
    return { etcdIndex, clusterId: header(res.headers, 'x-etcd-cluster-id'), event, firstByte };
  }

  /**
   * Stream watch, always registered from "now" (never with a waitIndex: a stream from a past index delivers one
   * event and then nothing, notes 3.2). The body is read eagerly into memory — a stream reader that lets the
   * socket fill up is dropped by etcd without a word (3.4) — and split into events on newlines.
   */
  async stream(key: string, opts: { recursive?: boolean; signal: AbortSignal }): Promise<StreamHandle> {
    const path = keysPath(key, { wait: true, recursive: opts.recursive || undefined, stream: true });
    const res = await this.#request('GET', path, { signal: opts.signal, timeoutMs: 0 });
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      this.#decode(res.statusCode, res.headers, text);
      throw new UnexpectedResponseError(`stream watch answered HTTP ${res.statusCode}`, res.statusCode, true);
    }
    const etcdIndex = parseIndex(header(res.headers, 'x-etcd-index'), 'X-Etcd-Index');
    let queue: EtcdEvent[] = [];
    let head = 0;
    let lastIndex = etcdIndex;
    let failure: Error | null = null;
    let wake: (() => void) | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    (async () => {
      try {
        // readline decodes the bytes as one UTF-8 stream (a character split between chunks waits for its last byte)
        // and splits lines on '\n', which never occurs inside a multi-byte character; etcd ends every event with
        // one and escapes newlines inside values.
        for await (const line of createInterface({ input: res.body, crlfDelay: Infinity })) {
          if (!line.trim()) continue;
          const ev = decodeEvent(line);
          lastIndex = Math.max(lastIndex, ev.node.modifiedIndex);
          queue.push(ev);
          notify();
        }
        failure = new TransportError(`${this.origin}: the stream watch ended`);
      } catch (err) {
        failure = err instanceof EtcdError || err instanceof UnexpectedResponseError ? err : this.#wrap(err, opts.signal);
      }
      notify();
    })();
    return {
      etcdIndex,
      lastIndex: () => lastIndex,
      next: async () => {
        while (head === queue.length) {
          if (failure) throw failure;
          await new Promise<void>((resolve) => (wake = resolve));
        }
        const ev = queue[head++]!;
        if (head > 1024 && head * 2 > queue.length) {
          queue = queue.slice(head);
          head = 0;
        }
        return ev;
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.#members.map((m) => m.pool.destroy()));
  }
}
