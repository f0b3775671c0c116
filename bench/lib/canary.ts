// Canaries: one write to the SOURCE every 100 ms (key /bench/canary/<seq>, value = send time), and a stream
// watch on the DESTINATION that records when each canary arrives there.
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, request } from 'undici';
import { put } from './etcd-http.js';

export const CANARY_DIR = '/bench/canary';

export interface CanaryRecord {
  seq: number;
  /** performance.now() when the PUT was sent / answered. */
  sentAt: number;
  ackAt: number | null;
  index: number | null;
  error: string | null;
}

/** Watches DST's canary directory with one stream watch; re-opens it if it ends. */
export class CanaryWatcher {
  /** seq → performance.now() of the first arrival seen. */
  readonly arrivals = new Map<number, number>();
  restarts = 0;
  readonly #abort = new AbortController();
  #loop: Promise<void> | undefined;
  #registered: (() => void) | undefined;

  constructor(private readonly dstUrl: string) {}

  /** Resolves once the first watch is registered (headers received). */
  start(): Promise<void> {
    const registered = new Promise<void>((resolve) => (this.#registered = resolve));
    this.#loop = this.#run();
    return Promise.race([registered, sleep(10_000).then(() => Promise.reject(new Error('canary watch not registered within 10 s')))]);
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        const res = await request(`${this.dstUrl}/v2/keys${CANARY_DIR}?wait=true&recursive=true&stream=true`, {
          signal,
          headersTimeout: 10_000,
          bodyTimeout: 0,
        });
        this.#registered?.();
        let buf = '';
        for await (const chunk of res.body) {
          const now = performance.now();
          buf += (chunk as Buffer).toString('utf8');
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            try {
              const ev = JSON.parse(line) as { action?: string; node?: { key?: string } };
              const key = ev.node?.key ?? '';
              if (ev.action === 'delete' || ev.action === 'expire' || !key.startsWith(CANARY_DIR + '/')) continue;
              const seq = Number(key.slice(CANARY_DIR.length + 1));
              if (Number.isSafeInteger(seq) && !this.arrivals.has(seq)) this.arrivals.set(seq, now);
            } catch {
              // not an event (e.g. an error body): ignore
            }
          }
        }
      } catch {
        // aborted, or the connection failed: re-open below unless stopping
      }
      if (signal.aborted) break;
      this.restarts++;
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}

/** Writes one canary every `everyMs` for `seconds`, numbering from `firstSeq`. Waits for every answer. */
export async function writeCanaries(pool: Pool, firstSeq: number, seconds: number, everyMs = 100): Promise<CanaryRecord[]> {
  const count = Math.floor((seconds * 1000) / everyMs);
  const records: CanaryRecord[] = [];
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    // A fixed clock: each canary is due at start + i * everyMs, whatever the previous write is doing.
    const due = start + i * everyMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const rec: CanaryRecord = { seq: firstSeq + i, sentAt: performance.now(), ackAt: null, index: null, error: null };
    records.push(rec);
    pending.push(
      put(pool, `${CANARY_DIR}/${rec.seq}`, String(Date.now())).then(
        (r) => {
          rec.ackAt = performance.now();
          rec.index = r.index;
        },
        (err: unknown) => {
          rec.error = String((err as Error)?.message ?? err).slice(0, 200);
        },
      ),
    );
  }
  await Promise.all(pending);
  return records;
}
