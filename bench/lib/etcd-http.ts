// Minimal etcd v2 calls the benchmark makes directly (writes to the source, reads for checks), over undici.
import { Client, Pool, request, type Dispatcher } from 'undici';

export interface PutResult {
  /** X-Etcd-Index of the write (its modifiedIndex). */
  index: number;
}

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

/** PUT key=value through a pool or client; throws on a non-2xx answer. */
export async function put(d: Dispatcher, key: string, value: string, timeoutMs = 10_000, headers: Record<string, string> = {}): Promise<PutResult> {
  const res = await d.request({
    method: 'PUT',
    path: `/v2/keys${key}`,
    headers: { ...FORM, ...headers },
    body: `value=${encodeURIComponent(value)}`,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  const text = await res.body.text();
  if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`PUT ${key}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
  return { index: Number(res.headers['x-etcd-index']) };
}

/** The store's current index (X-Etcd-Index of a quorum read). */
export async function storeIndex(baseUrl: string): Promise<number> {
  const res = await request(`${baseUrl}/v2/keys/?quorum=true`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
  await res.body.text();
  const idx = Number(res.headers['x-etcd-index']);
  if (!Number.isSafeInteger(idx)) throw new Error(`no X-Etcd-Index from ${baseUrl}`);
  return idx;
}

interface Node {
  key?: string;
  value?: string;
  dir?: boolean;
  nodes?: Node[];
}

/** key → value of every value node below `prefix` (empty map when it does not exist). */
export async function readTree(baseUrl: string, prefix: string): Promise<Map<string, string>> {
  const res = await request(`${baseUrl}/v2/keys${prefix}?recursive=true&quorum=true`, { headersTimeout: 60_000, bodyTimeout: 60_000 });
  const text = await res.body.text();
  const out = new Map<string, string>();
  if (res.statusCode === 404) return out;
  if (res.statusCode !== 200) throw new Error(`GET ${prefix}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
  const stack: Node[] = [(JSON.parse(text) as { node: Node }).node];
  while (stack.length) {
    const n = stack.pop()!;
    if (n.dir) stack.push(...(n.nodes ?? []));
    else if (n.key !== undefined) out.set(n.key, n.value ?? '');
  }
  return out;
}

/** Keys whose value differs between two trees, plus keys present on one side only. */
export function diffTrees(a: Map<string, string>, b: Map<string, string>): number {
  let diff = 0;
  for (const [k, v] of a) if (b.get(k) !== v) diff++;
  for (const k of b.keys()) if (!a.has(k)) diff++;
  return diff;
}

/**
 * Writes `count` keys as fast as `concurrency` parallel requests allow (a bounded loop). Returns the highest
 * write index, the seconds taken and the number of failed writes.
 */
export async function fill(
  baseUrl: string,
  count: number,
  keyOf: (i: number) => string,
  valueOf: (i: number) => string,
  opts: { concurrency?: number; onProgress?: (done: number) => void } = {},
): Promise<{ maxIndex: number; seconds: number; failed: number; lastKey: string | null }> {
  const concurrency = opts.concurrency ?? 64;
  const pool = new Pool(baseUrl, { connections: concurrency });
  let next = 0;
  let done = 0;
  let failed = 0;
  let maxIndex = 0;
  let lastKey: string | null = null;
  const started = performance.now();
  const workers = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) {
      const i = next++;
      // Up to 3 attempts per key; a key that still fails is counted, not retried forever.
      for (let attempt = 1; attempt <= 3; attempt++) {
        try {
          const r = await put(pool, keyOf(i), valueOf(i));
          if (r.index > maxIndex) {
            maxIndex = r.index;
            lastKey = keyOf(i);
          }
          break;
        } catch {
          if (attempt === 3) failed++;
        }
      }
      done++;
      if (opts.onProgress && done % 10_000 === 0) opts.onProgress(done);
    }
  });
  await Promise.all(workers);
  await pool.close();
  return { maxIndex, seconds: (performance.now() - started) / 1000, failed, lastKey };
}

/** Writes `count` keys one at a time on one keep-alive connection (each waits for the previous ack). */
export async function writeSequentially(
  baseUrl: string,
  count: number,
  keyOf: (i: number) => string,
  valueOf: (i: number) => string,
  onProgress?: (done: number) => void,
): Promise<{ seconds: number; failed: number }> {
  const client = new Client(baseUrl, { pipelining: 1, keepAliveTimeout: 60_000 });
  let failed = 0;
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    try {
      await put(client, keyOf(i), valueOf(i));
    } catch {
      failed++;
    }
    if (onProgress && (i + 1) % 10_000 === 0) onProgress(i + 1);
  }
  const seconds = (performance.now() - started) / 1000;
  await client.close();
  return { seconds, failed };
}

/**
 * Writes keys one at a time on one keep-alive connection for `seconds` (each PUT waits for the previous answer):
 * the destination etcd's one-connection sequential write rate. Returns the writes answered with a 2xx, the
 * failed ones, the exact seconds and the answer latencies (ms).
 */
export async function writeSequentiallyFor(
  baseUrl: string,
  seconds: number,
  keyOf: (i: number) => string,
  valueOf: (i: number) => string,
): Promise<{ writes: number; failed: number; seconds: number; latencies: number[] }> {
  const client = new Client(baseUrl, { pipelining: 1, keepAliveTimeout: 60_000 });
  // One write before the clock starts, so the connection is open and etcd has served a write.
  await put(client, keyOf(0), valueOf(0));
  try {
    return await timeSequentialWrites(seconds, (i) => put(client, keyOf(i), valueOf(i)));
  } finally {
    await client.close();
  }
}

/** Calls `write(1)`, `write(2)`, … one after the other for `seconds`: the writes that succeeded, the failed ones,
 * the exact seconds and each answer's latency (ms). Any API's one-at-a-time writer. */
export async function timeSequentialWrites(seconds: number, write: (i: number) => Promise<unknown>): Promise<{ writes: number; failed: number; seconds: number; latencies: number[] }> {
  let writes = 0;
  let failed = 0;
  const latencies: number[] = [];
  const started = performance.now();
  const end = started + seconds * 1000;
  let now = started;
  for (let i = 1; now < end; i++) {
    const t0 = now;
    try {
      await write(i);
      writes++;
    } catch {
      failed++;
    }
    now = performance.now();
    latencies.push(now - t0);
  }
  return { writes, failed, seconds: (now - started) / 1000, latencies };
}
