// Lease keepalives: one shared LeaseKeepAlive stream, opened on first use and re-opened (on the next member when
// the old one failed) after a failure; each keepalive waits for its answer on it.
import * as grpc from '@grpc/grpc-js';
import { isRetryable, MirrorError } from '../errors.js';
import { V3RequestError } from './errors.js';
import { errorFrom } from './grpc-status.js';
import type { Member } from './member.js';
import { methodOf } from './proto.js';

/** What the keepalives need from their client. */
export interface KeepAliveHost {
  /** The member to use now and the metadata (token) for a new stream. */
  connect(): Promise<{ member: Member; metadata: grpc.Metadata }>;
  memberFailed(member: Member): void;
  /** Members of the cluster: a failed keepalive is sent again once per member. */
  readonly members: number;
  /** How long an answer may take before the stream is presumed wedged. */
  readonly timeoutMs: number;
}

interface Waiter {
  resolve(ttl: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}
interface KeepAliveStream {
  call: grpc.ClientDuplexStream<object, { ID: string; TTL: string }>;
  member: Member;
  waiting: Map<string, Waiter[]>;
}

export class KeepAlives {
  #stream: KeepAliveStream | undefined;

  constructor(private readonly host: KeepAliveHost) {}

  /** One keepalive; resolves with the new TTL (0 or less: lease gone). */
  async once(id: string): Promise<number> {
    let lastError: MirrorError | undefined;
    // A keepalive is idempotent: a failed one is sent again on a new stream, once per member.
    for (let tried = 0; tried < this.host.members; tried++) {
      const stream = this.#stream ?? (await this.#open());
      try {
        return await this.#keepAliveOn(stream, id);
      } catch (err) {
        if (!(err instanceof MirrorError) || !isRetryable(err)) throw err;
        lastError = err;
      }
    }
    throw lastError!;
  }

  close(): void {
    this.#stream?.call.cancel();
  }

  async #open(): Promise<KeepAliveStream> {
    const { member, metadata } = await this.host.connect();
    // Another caller may have opened one while we waited for the token.
    if (this.#stream) return this.#stream;
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
      this.#drop(stream, err);
    });
    this.#stream = stream;
    return stream;
  }

  #keepAliveOn(stream: KeepAliveStream, id: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        // No answer in time: the stream is presumed wedged; drop it so the next keepalive opens a new one.
        timer: setTimeout(
          () => this.#drop(stream, new V3RequestError(`${stream.member.origin}: LeaseKeepAlive: no answer within ${this.host.timeoutMs} ms`, grpc.status.DEADLINE_EXCEEDED, true)),
          this.host.timeoutMs,
        ),
      };
      const waiters = stream.waiting.get(id);
      if (waiters) waiters.push(waiter);
      else stream.waiting.set(id, [waiter]);
      stream.call.write({ ID: id });
    });
  }

  #drop(stream: KeepAliveStream, err: MirrorError): void {
    if (this.#stream === stream) this.#stream = undefined;
    if (isRetryable(err)) this.host.memberFailed(stream.member);
    for (const waiters of stream.waiting.values()) {
      for (const w of waiters) {
        clearTimeout(w.timer);
        w.reject(err);
      }
    }
    stream.waiting.clear();
    stream.call.cancel();
  }
}
