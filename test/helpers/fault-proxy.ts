// A TCP proxy in front of an etcd that can add latency, cut connections, or swallow traffic (a partition).
import { createServer, connect, type Socket } from 'node:net';

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  /** Adds `ms` of one-way latency to every chunk in both directions, order preserved; 0 = pass-through. */
  setDelay(ms: number): void;
  /**
   * Holds back, by `ms`, every chunk from the server that does not start a response ("HTTP/1."), order preserved:
   * a watch's headers (flushed on their own) arrive at once, its body late — a history match's bytes delayed
   * behind its headers, as a busy server or a retransmission does. 0 = off.
   */
  lateBodies(ms: number): void;
  /** Resets all current connections (RST); new connections are still accepted. */
  cut(): void;
  /** While on, connections are accepted and kept open but nothing is forwarded; queued data is dropped. */
  blackhole(on: boolean): void;
  /** The connections open now go silent (nothing forwarded, sockets stay open); new ones work normally. */
  freeze(): void;
  /** Number of client connections currently open. */
  connections(): number;
  /** Every HTTP/1.1 request clients sent through the proxy so far (the request line and whether it carried credentials). */
  requests(): readonly ProxiedRequest[];
  /** Stops accepting and destroys all connections. */
  close(): Promise<void>;
}

const RESPONSE_START = Buffer.from('HTTP/1.');

export interface ProxiedRequest {
  /** Date.now() when its headers had passed. */
  at: number;
  method: string;
  path: string;
  /** Carried an Authorization header (a v2 password: the server checks it with bcrypt). */
  authorized: boolean;
}

/** Reads HTTP/1.1 requests off a client's byte stream (heads, then Content-Length bodies skipped). */
class RequestScanner {
  private buf = '';
  private skip = 0;

  constructor(private readonly seen: ProxiedRequest[]) {}

  push(chunk: Buffer): void {
    this.buf += chunk.toString('latin1');
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, this.buf.length);
        this.buf = this.buf.slice(n);
        this.skip -= n;
        if (this.skip > 0) return;
      }
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [line = '', ...headers] = this.buf.slice(0, end).split('\r\n');
      this.buf = this.buf.slice(end + 4);
      const [method = '', path = ''] = line.split(' ');
      const header = (name: string) => headers.find((h) => h.toLowerCase().startsWith(name + ':'))?.slice(name.length + 1).trim();
      this.seen.push({ at: Date.now(), method, path, authorized: header('authorization') !== undefined });
      this.skip = Number(header('content-length') ?? 0);
    }
  }
}

/** One direction of a connection: chunks wait in `queue` until their due time, so order is kept. */
class Pipe {
  private queue: { due: number; chunk: Buffer | null }[] = []; // null = end of stream
  private timer: NodeJS.Timeout | undefined;
  private draining = false;
  /** Set by freeze(): this connection swallows everything from now on. */
  frozen = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly state: { delayMs: number; blackhole: boolean; lateBodyMs: number },
    /** True for the server → client direction. */
    private readonly fromServer = false,
  ) {
    from.on('data', (chunk: Buffer) => this.push(chunk));
    from.on('end', () => this.push(null));
  }

  /** Client → server only: sees the requests. */
  scanner: RequestScanner | undefined;

  private push(chunk: Buffer | null): void {
    if (chunk !== null) this.scanner?.push(chunk);
    if (this.state.blackhole || this.frozen) return; // a partition swallows FINs too
    if (this.fromServer && this.state.lateBodyMs > 0 && chunk !== null) {
      // A response's headers go at once (behind anything still queued); whatever follows them is late.
      const headersEnd = chunk.subarray(0, 7).equals(RESPONSE_START) ? chunk.indexOf('\r\n\r\n') : -1;
      const now = Date.now();
      if (headersEnd >= 0) {
        this.queue.push({ due: now + this.state.delayMs, chunk: chunk.subarray(0, headersEnd + 4) });
        if (headersEnd + 4 < chunk.length) this.queue.push({ due: now + this.state.delayMs + this.state.lateBodyMs, chunk: chunk.subarray(headersEnd + 4) });
      } else this.queue.push({ due: now + this.state.delayMs + this.state.lateBodyMs, chunk });
      this.schedule();
      return;
    }
    if (this.state.delayMs === 0 && this.queue.length === 0) return this.deliver(chunk);
    this.queue.push({ due: Date.now() + this.state.delayMs, chunk });
    this.schedule();
  }

  private schedule(): void {
    const head = this.queue[0];
    if (!head || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = Date.now();
      while (this.queue[0] && this.queue[0].due <= now) this.deliver(this.queue.shift()!.chunk);
      this.schedule();
    }, Math.max(0, head.due - Date.now()));
  }

  private deliver(chunk: Buffer | null): void {
    if (this.to.destroyed) return;
    if (chunk === null) {
      this.to.end();
    } else if (!this.to.write(chunk) && !this.draining) {
      // Backpressure: a slow reader on one side slows the writer on the other, as without the proxy.
      this.draining = true;
      this.from.pause();
      this.to.once('drain', () => {
        this.draining = false;
        this.from.resume();
      });
    }
  }

  drop(): void {
    this.queue = [];
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  const state = { delayMs: 0, blackhole: false, lateBodyMs: 0 };
  const open = new Map<Socket, { upstream: Socket; pipes: Pipe[] }>();
  const seen: ProxiedRequest[] = [];

  // allowHalfOpen: a FIN from one side is forwarded (after any delayed data) instead of closing both ways.
  // noDelay on both legs: with Nagle, the proxy itself would hold small segments (an event right behind its
  // headers) until the peer's delayed ACK, 40 ms later — a delay no WAN link adds.
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    const pipes = [new Pipe(client, upstream, state), new Pipe(upstream, client, state, true)];
    pipes[0]!.scanner = new RequestScanner(seen);
    open.set(client, { upstream, pipes });
    const teardown = (): void => {
      for (const p of pipes) p.drop();
      client.destroy();
      upstream.destroy();
      open.delete(client);
    };
    client.on('error', teardown).on('close', teardown);
    upstream.on('error', teardown).on('close', teardown);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fault proxy: unexpected address');
  const port = address.port;

  const resetAll = (): void => {
    for (const [client, { upstream }] of [...open]) {
      for (const s of [client, upstream]) {
        try {
          s.resetAndDestroy();
        } catch {
          s.destroy();
        }
      }
    }
  };

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    setDelay(ms) {
      state.delayMs = Math.max(0, ms);
    },
    lateBodies(ms) {
      state.lateBodyMs = Math.max(0, ms);
    },
    cut() {
      resetAll();
    },
    blackhole(on) {
      state.blackhole = on;
      if (on) for (const { pipes } of open.values()) for (const p of pipes) p.drop();
    },
    freeze() {
      for (const { pipes } of open.values()) for (const p of pipes) p.frozen = true;
    },
    connections() {
      return open.size;
    },
    requests() {
      return seen;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      resetAll();
      await closed;
    },
  };
}
