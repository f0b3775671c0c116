// One watch: a bidi Watch stream that resumes by itself after a retryable failure (see WatchStream).
import * as grpc from '@grpc/grpc-js';
import { isRetryable } from '../errors.js';
import { CompactedError, V3RequestError } from './errors.js';
import { errorFrom, errorFromCancel, TOKEN_STALE } from './grpc-status.js';
import type { Member } from './member.js';
import { eventOf, methodOf, type RawEvent, type RawHeader, type RawWatchResponse } from './proto.js';
import type { V3Watch, WatchMessage } from './types.js';

const WATCH_BACKOFF_MIN_MS = 100;
const WATCH_BACKOFF_MAX_MS = 2_000;
/** Watch responses queued for a slow consumer before the stream is paused (gRPC flow control holds the rest). */
const WATCH_QUEUE_HIGH_WATER = 16;
/**
 * etcd's watchBatchMaxRevs (mvcc/watchable_store.go): a catch-up response carries at most this many revisions.
 * Fewer means the watcher had nothing more up to the response's header revision.
 */
export const WATCH_BATCH_MAX_REVS = 1000;

/** What a watch needs from its client. */
export interface StreamHost {
  /** The member to use now and the metadata (token) for a new stream. */
  connect(): Promise<{ member: Member; metadata: grpc.Metadata }>;
  memberFailed(member: Member): void;
  checkCluster(member: Member, header: RawHeader | null): void;
  /** Forget the token if it is this one, so the next stream authenticates again. */
  dropToken(metadata: grpc.Metadata): void;
  readonly authenticates: boolean;
  forget(watch: WatchStream): void;
}

/**
 * One watch: a bidi Watch stream, re-created after a retryable failure from the revision after the last event
 * delivered (never from a header or progress revision: a catch-up response's header carries the store's current
 * revision, and etcd 3.4.23's progress notifications can run ahead of its events).
 */
export class WatchStream implements V3Watch {
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
    // Counted over the response as etcd sent it, before the filter below.
    let revisions = 0;
    let previous = -1;
    for (const e of events) {
      const r = Number(e.kv!.mod_revision);
      if (r !== previous) revisions++;
      previous = r;
    }
    // A revision already delivered (after a resume, or etcd #15275) is dropped whole: a response never splits one.
    const fresh = events.filter((e) => Number(e.kv!.mod_revision) > this.#lastEventRevision);
    const last = fresh[fresh.length - 1];
    if (!last) return;
    this.#lastEventRevision = Number(last.kv!.mod_revision);
    const through = revisions < WATCH_BATCH_MAX_REVS ? Math.max(revision, this.#lastEventRevision) : this.#lastEventRevision;
    this.#push({ kind: 'events', revision, events: fresh.map(eventOf), through, receivedAt: performance.now() });
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
