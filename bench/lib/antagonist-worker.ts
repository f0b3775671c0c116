// Worker thread: the open-loop antagonist. Writes are scheduled on a fixed clock at the target rate, never
// waiting for earlier answers; at most `maxOutstanding` requests are unanswered at a time, and a write that
// falls due while that many are pending is not sent (counted as notSent). Runs in its own thread so its CPU
// bursts never delay the canary watcher's event loop.
import { parentPort, workerData } from 'node:worker_threads';
import { Pool } from 'undici';

export interface AntagonistConfig {
  url: string;
  connections: number;
  maxOutstanding: number;
}

export interface RunRequest {
  type: 'run';
  rate: number;
  seconds: number;
  /** Keys are `${keyPrefix}/k${i % keys}`. */
  keyPrefix: string;
  keys: number;
  /** Distinguishes the values of one step from another's. */
  tag: string;
}

export interface RunResult {
  rate: number;
  seconds: number;
  scheduled: number;
  sent: number;
  acked: number;
  /** Acked before the step's end (the rest were answered during the wind-down). */
  ackedInStep: number;
  notSent: number;
  errors: number;
  errorSamples: string[];
  /** Write acknowledgement latency, ms, ascending (sent → answered). */
  latencies: Float64Array;
  maxIndex: number;
  /** Time from the step's end until the last answer, ms. */
  windDownMs: number;
  /** Largest gap between two scheduler ticks, ms (event-loop stalls of the load generator itself). */
  maxTickGapMs: number;
}

const cfg = workerData as AntagonistConfig;
const pool = new Pool(cfg.url, { connections: cfg.connections, keepAliveTimeout: 30_000 });
const HEADERS = { 'content-type': 'application/x-www-form-urlencoded' };
const REQUEST_TIMEOUT_MS = 10_000;

async function run(req: RunRequest): Promise<RunResult> {
  const total = Math.round(req.rate * req.seconds);
  const latencies = new Float64Array(total);
  let nLat = 0;
  let scheduled = 0;
  let sent = 0;
  let acked = 0;
  let ackedInStep = 0;
  let notSent = 0;
  let errors = 0;
  let outstanding = 0;
  let maxIndex = 0;
  let maxTickGapMs = 0;
  const errorSamples: string[] = [];
  const start = performance.now();
  const end = start + req.seconds * 1000;
  let allAnswered: () => void = () => {};

  const send = (i: number): void => {
    sent++;
    outstanding++;
    const t0 = performance.now();
    pool
      .request({
        method: 'PUT',
        path: `/v2/keys${req.keyPrefix}/k${i % req.keys}`,
        headers: HEADERS,
        body: `value=${req.tag}-${i}`,
        headersTimeout: REQUEST_TIMEOUT_MS,
        bodyTimeout: REQUEST_TIMEOUT_MS,
      })
      .then(async (res) => {
        await res.body.text();
        if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`HTTP ${res.statusCode}`);
        const now = performance.now();
        acked++;
        if (now <= end) ackedInStep++;
        if (nLat < latencies.length) latencies[nLat++] = now - t0;
        const idx = Number(res.headers['x-etcd-index']);
        if (idx > maxIndex) maxIndex = idx;
      })
      .catch((err: unknown) => {
        errors++;
        if (errorSamples.length < 5) errorSamples.push(String((err as Error)?.message ?? err).slice(0, 200));
      })
      .finally(() => {
        outstanding--;
        if (outstanding === 0 && scheduled >= total) allAnswered();
      });
  };

  await new Promise<void>((resolve) => {
    let lastTick = start;
    const tick = (): void => {
      const now = performance.now();
      maxTickGapMs = Math.max(maxTickGapMs, now - lastTick);
      lastTick = now;
      const due = now >= end ? total : Math.min(total, Math.floor(((now - start) / 1000) * req.rate));
      while (scheduled < due) {
        const i = scheduled++;
        if (outstanding >= cfg.maxOutstanding) notSent++;
        else send(i);
      }
      if (now < end && scheduled < total) setTimeout(tick, 1);
      else {
        // Whatever was still due when the clock ran out is not sent.
        notSent += total - scheduled;
        scheduled = total;
        resolve();
      }
    };
    setTimeout(tick, 1);
  });
  const stepEnd = performance.now();
  if (outstanding > 0) await new Promise<void>((resolve) => (allAnswered = resolve));
  const windDownMs = performance.now() - stepEnd;
  return {
    rate: req.rate,
    seconds: req.seconds,
    scheduled,
    sent,
    acked,
    ackedInStep,
    notSent,
    errors,
    errorSamples,
    latencies: latencies.slice(0, nLat).sort(),
    maxIndex,
    windDownMs,
    maxTickGapMs,
  };
}

parentPort!.on('message', (msg: RunRequest | { type: 'close' }) => {
  if (msg.type === 'close') {
    pool.close().finally(() => process.exit(0));
    return;
  }
  run(msg).then(
    (result) => parentPort!.postMessage({ type: 'done', result }, [result.latencies.buffer as ArrayBuffer]),
    (err: unknown) => parentPort!.postMessage({ type: 'error', message: String((err as Error)?.message ?? err) }),
  );
});
