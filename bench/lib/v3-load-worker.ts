// Worker thread: the v3 (gRPC) load generator of `npm run bench -- --src-api v3`. Every put goes to a unique key
// `<keyPrefix>/<seq, 8 digits>` (seq assigned at send, from 0) with a ~valueBytes value starting with `<seq>:`, and
// the source revision of each acknowledged put is kept (revisions[seq]), so that the bench can map destination
// events back to source order. Two loops:
//   closed: `concurrency` writers, each sending its next put when the previous one is answered;
//   open:   a fixed clock at `rate` put/s, at most `concurrency` unanswered (a put due beyond that is not sent).
// In its own thread so that its CPU bursts never delay the canary writer's and the destination watch's timers.
import { parentPort, workerData } from 'node:worker_threads';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { V3Client } from '../../src/etcd/v3/client.js';

export interface V3LoadConfig {
  /** The source etcd, directly (never through the delay proxy). */
  url: string;
  /** gRPC channels (HTTP/2 connections) the puts are spread over. */
  channels: number;
}

export interface V3LoadRequest {
  loop: 'closed' | 'open';
  /** Length of the run; a closed loop with maxPuts also stops after that many puts. */
  seconds: number;
  /** closed: puts in flight; open: most puts unanswered at once. */
  concurrency: number;
  /** open loop: put/s. */
  rate?: number;
  /** closed loop: stop after this many puts have been sent. */
  maxPuts?: number;
  keyPrefix: string;
  valueBytes: number;
}

export interface V3LoadResult {
  loop: 'closed' | 'open';
  keyPrefix: string;
  /** Epoch ms (sub-ms precision, comparable across threads): first send, end of sending, last answer. */
  startedAt: number;
  sendEndedAt: number;
  finishedAt: number;
  sent: number;
  acked: number;
  errors: number;
  errorSamples: string[];
  /** open loop: puts that fell due while `concurrency` were unanswered, or after the clock ran out. */
  notSent: number;
  /** Source revision of put seq (index); 0: not acknowledged. Length = sent. */
  revisions: Float64Array;
  /** Acknowledgement latency (send → answer), ms, ascending. */
  latencies: Float64Array;
  /** Acknowledgements per 100 ms since startedAt. */
  ackBuckets: Uint32Array;
  maxRevision: number;
  /** Largest gap between two ticks of the open loop's clock, ms (stalls of this thread). */
  maxTickGapMs: number;
}

export const BUCKET_MS = 100;
const epochNow = (): number => performance.timeOrigin + performance.now();

/** The key of put `seq` under `keyPrefix` (zero-padded, so key order is seq order). */
export function loadKey(keyPrefix: string, seq: number): string {
  return `${keyPrefix}/${String(seq).padStart(8, '0')}`;
}

class Growable {
  data: Float64Array;
  constructor(capacity: number) {
    this.data = new Float64Array(Math.max(16, capacity));
  }
  set(i: number, v: number): void {
    if (i >= this.data.length) {
      const bigger = new Float64Array(Math.max(i + 1, this.data.length * 2));
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[i] = v;
  }
}

async function run(clients: V3Client[], req: V3LoadRequest): Promise<V3LoadResult> {
  const expected = req.loop === 'open' ? Math.ceil((req.rate ?? 0) * req.seconds) : (req.maxPuts ?? 20_000 * req.seconds);
  const revisions = new Growable(expected);
  const latencies = new Growable(expected);
  const buckets = new Uint32Array(Math.ceil((req.seconds * 1000 + 60_000) / BUCKET_MS));
  const padding = '.'.repeat(Math.max(0, req.valueBytes));
  const errorSamples: string[] = [];
  let sent = 0;
  let acked = 0;
  let errors = 0;
  let notSent = 0;
  let nLat = 0;
  let maxRevision = 0;
  let maxTickGapMs = 0;
  const startedAt = epochNow();
  const deadline = startedAt + req.seconds * 1000;

  const put = async (seq: number): Promise<void> => {
    const head = `${seq}:`;
    const value = Buffer.from(head + padding.slice(head.length));
    const client = clients[seq % clients.length]!;
    const t = epochNow();
    try {
      const { revision } = await client.put(Buffer.from(loadKey(req.keyPrefix, seq)), value);
      const now = epochNow();
      acked++;
      revisions.set(seq, revision);
      latencies.set(nLat++, now - t);
      if (revision > maxRevision) maxRevision = revision;
      const b = Math.floor((now - startedAt) / BUCKET_MS);
      if (b < buckets.length) buckets[b]!++;
    } catch (err) {
      errors++;
      revisions.set(seq, 0);
      if (errorSamples.length < 5) errorSamples.push(String((err as Error)?.message ?? err).slice(0, 200));
    }
  };

  let sendEndedAt = startedAt;
  if (req.loop === 'closed') {
    const limit = req.maxPuts ?? Number.POSITIVE_INFINITY;
    const writer = async (): Promise<void> => {
      while (sent < limit && epochNow() < deadline) await put(sent++);
    };
    await Promise.all(Array.from({ length: req.concurrency }, writer));
    sendEndedAt = epochNow();
  } else {
    const rate = req.rate ?? 0;
    const total = Math.round(rate * req.seconds);
    let scheduled = 0;
    let outstanding = 0;
    const pending = new Set<Promise<void>>();
    await new Promise<void>((resolve) => {
      let lastTick = epochNow();
      const tick = (): void => {
        const now = epochNow();
        maxTickGapMs = Math.max(maxTickGapMs, now - lastTick);
        lastTick = now;
        const due = Math.min(total, Math.floor(((now - startedAt) / 1000) * rate));
        for (; scheduled < due; scheduled++) {
          if (outstanding >= req.concurrency) {
            notSent++;
            continue;
          }
          outstanding++;
          const p = put(sent++).finally(() => {
            outstanding--;
            pending.delete(p);
          });
          pending.add(p);
        }
        if (now < deadline && scheduled < total) setTimeout(tick, 1);
        else {
          notSent += total - scheduled;
          resolve();
        }
      };
      setTimeout(tick, 1);
    });
    sendEndedAt = epochNow();
    await Promise.all([...pending]);
  }
  return {
    loop: req.loop,
    keyPrefix: req.keyPrefix,
    startedAt,
    sendEndedAt,
    finishedAt: epochNow(),
    sent,
    acked,
    errors,
    errorSamples,
    notSent,
    revisions: revisions.data.slice(0, sent),
    latencies: latencies.data.slice(0, nLat).sort(),
    ackBuckets: buckets,
    maxRevision,
    maxTickGapMs,
  };
}

if (parentPort && workerData) {
  const cfg = workerData as V3LoadConfig;
  const clients = Array.from({ length: Math.max(1, cfg.channels) }, (_, i) => new V3Client(parseCluster(cfg.url, `load-${i}`)));
  const port = parentPort;
  port.on('message', (msg: { type: 'run'; id: number; req: V3LoadRequest } | { type: 'close' }) => {
    if (msg.type === 'close') {
      void Promise.all(clients.map((c) => c.close())).finally(() => process.exit(0));
      return;
    }
    run(clients, msg.req).then(
      (result) => port.postMessage({ type: 'done', id: msg.id, result }, [result.revisions.buffer, result.latencies.buffer, result.ackBuckets.buffer] as ArrayBuffer[]),
      (err: unknown) => port.postMessage({ type: 'error', id: msg.id, message: String((err as Error)?.stack ?? err) }),
    );
  });
}
