// What the v3 bench sees of the destination: one watch on its /bench/ prefix recording when each canary and each
// load key first arrives (and in which order), the canary writer on the source, and tree comparisons.
import { setTimeout as sleep } from 'node:timers/promises';
import { prefixEnd, type V3Client } from '../../src/etcd/v3/client.js';
import { CANARY_DIR } from './canary.js';
import { BUCKET_MS } from './v3-load.js';

export const BENCH_PREFIX = '/bench/';
export const LOAD_DIR = '/bench/load';
export const epochNow = (): number => performance.timeOrigin + performance.now();

/** First arrivals of one load phase's keys (`/bench/load/<phase>/<seq>`), in destination order. */
export class PhaseArrivals {
  /** seq of each key, in the order its first put reached the destination. */
  readonly order: number[] = [];
  /** Puts of a key already seen (make-mirror's full copy writes every key again). */
  repeats = 0;
  #seen = new Uint8Array(1024);

  note(seq: number): void {
    if (seq >= this.#seen.length) {
      const bigger = new Uint8Array(Math.max(seq + 1, this.#seen.length * 2));
      bigger.set(this.#seen);
      this.#seen = bigger;
    }
    if (this.#seen[seq]) {
      this.repeats++;
      return;
    }
    this.#seen[seq] = 1;
    this.order.push(seq);
  }

  has(seq: number): boolean {
    return seq < this.#seen.length && this.#seen[seq] === 1;
  }
}

export class DestinationRecorder {
  /** Canary seq → epoch ms of its first arrival. */
  readonly canaryArrivals = new Map<number, number>();
  readonly phases = new Map<string, PhaseArrivals>();
  /** Every event under the prefix, re-copies included. */
  events = 0;
  restarts = 0;
  readonly errors: string[] = [];
  readonly t0 = epochNow();
  readonly #buckets: number[] = [];
  readonly #prefix = Buffer.from(BENCH_PREFIX);
  #stopped = false;
  #loop: Promise<void> | undefined;
  #watch: { close(): void } | undefined;

  constructor(private readonly client: V3Client) {}

  /** Watches from `fromRevision` (the destination's revision + 1 before the peer started: nothing is missed). */
  start(fromRevision: number): void {
    this.#loop = this.#run(fromRevision);
  }

  phase(name: string): PhaseArrivals {
    let p = this.phases.get(name);
    if (!p) this.phases.set(name, (p = new PhaseArrivals()));
    return p;
  }

  async #run(from: number): Promise<void> {
    let next = from;
    while (!this.#stopped) {
      const w = this.client.watch(this.#prefix, prefixEnd(this.#prefix), { startRevision: next, progressNotify: false });
      this.#watch = w;
      try {
        for await (const msg of w) {
          if (msg.kind !== 'events') continue;
          const now = epochNow();
          const b = Math.floor((now - this.t0) / BUCKET_MS);
          while (this.#buckets.length <= b) this.#buckets.push(0);
          this.#buckets[b]! += msg.events.length;
          this.events += msg.events.length;
          for (const ev of msg.events) {
            next = Math.max(next, ev.kv.modRevision + 1);
            if (ev.type === 'put') this.#onPut(ev.kv.key.toString('latin1'), now);
          }
        }
      } catch (err) {
        if (this.errors.length < 10) this.errors.push(String((err as Error)?.message ?? err).slice(0, 300));
      }
      if (this.#stopped) break;
      this.restarts++;
      await sleep(200);
    }
  }

  #onPut(key: string, now: number): void {
    if (key.startsWith(LOAD_DIR + '/')) {
      const slash = key.indexOf('/', LOAD_DIR.length + 1);
      if (slash < 0) return;
      const seq = Number(key.slice(slash + 1));
      if (Number.isSafeInteger(seq)) this.phase(key.slice(LOAD_DIR.length + 1, slash)).note(seq);
    } else if (key.startsWith(CANARY_DIR + '/')) {
      const seq = Number(key.slice(CANARY_DIR.length + 1));
      if (Number.isSafeInteger(seq) && !this.canaryArrivals.has(seq)) this.canaryArrivals.set(seq, now);
    }
  }

  /** Events that arrived in [from, to) (epoch ms, 100 ms resolution). */
  eventsBetween(from: number, to: number): number {
    let n = 0;
    const a = Math.max(0, Math.floor((from - this.t0) / BUCKET_MS));
    const b = Math.min(this.#buckets.length, Math.floor((to - this.t0) / BUCKET_MS));
    for (let i = a; i < b; i++) n += this.#buckets[i]!;
    return n;
  }

  /** Events per whole second from `from` to `to`. */
  perSecond(from: number, to: number): number[] {
    const out: number[] = [];
    for (let t = from; t + 1000 <= to + 1; t += 1000) out.push(this.eventsBetween(t, t + 1000));
    return out;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watch?.close();
    await this.#loop;
  }
}

export interface V3CanaryRecord {
  seq: number;
  /** Epoch ms. */
  sentAt: number;
  ackAt: number | null;
  revision: number | null;
  error: string | null;
}

/** One canary put every `everyMs` for `seconds` (key /bench/canary/<seq>, value <seq>) on a fixed clock; waits for every answer. */
export async function writeV3Canaries(client: V3Client, firstSeq: number, seconds: number, everyMs = 100): Promise<V3CanaryRecord[]> {
  const n = Math.floor((seconds * 1000) / everyMs);
  const start = epochNow();
  const records: V3CanaryRecord[] = [];
  const answers: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const wait = start + i * everyMs - epochNow();
    if (wait > 0) await sleep(wait);
    const rec: V3CanaryRecord = { seq: firstSeq + i, sentAt: epochNow(), ackAt: null, revision: null, error: null };
    records.push(rec);
    answers.push(
      client.put(Buffer.from(`${CANARY_DIR}/${rec.seq}`), Buffer.from(String(rec.seq))).then(
        ({ revision }) => {
          rec.ackAt = epochNow();
          rec.revision = revision;
        },
        (err: unknown) => (rec.error = String((err as Error)?.message ?? err).slice(0, 200)),
      ),
    );
  }
  await Promise.all(answers);
  return records;
}

/** Number of keys under `prefix` (a count-only range). */
export async function countKeys(client: V3Client, prefix: string): Promise<number> {
  const key = Buffer.from(prefix);
  return (await client.range(key, { rangeEnd: prefixEnd(key), limit: 1, keysOnly: true })).count;
}

export async function keySet(client: V3Client, prefix: string): Promise<Set<string>> {
  const key = Buffer.from(prefix);
  const { kvs } = await client.rangeAll(key, prefixEnd(key));
  return new Set(kvs.map((kv) => kv.key.toString('latin1')));
}

export interface TreeDiff {
  sourceKeys: number;
  destinationKeys: number;
  missing: number;
  differing: number;
  extra: number;
  equal: boolean;
}

/** Source and destination contents under /bench/ (same keys: both sides use the prefix /bench). */
export async function compareTrees(src: V3Client, dst: V3Client): Promise<TreeDiff> {
  const key = Buffer.from(BENCH_PREFIX);
  const [a, b] = await Promise.all([src.rangeAll(key, prefixEnd(key)), dst.rangeAll(key, prefixEnd(key))]);
  const theirs = new Map(b.kvs.map((kv) => [kv.key.toString('latin1'), kv.value]));
  let missing = 0;
  let differing = 0;
  for (const kv of a.kvs) {
    const v = theirs.get(kv.key.toString('latin1'));
    if (v === undefined) missing++;
    else if (!v.equals(kv.value)) differing++;
  }
  const extra = b.kvs.length - (a.kvs.length - missing);
  return { sourceKeys: a.kvs.length, destinationKeys: b.kvs.length, missing, differing, extra, equal: missing === 0 && differing === 0 && extra === 0 };
}

/**
 * Source order against destination order for one phase: `revisions[seq]` is the source revision of put seq (0: not
 * acknowledged). An inversion is a first arrival whose source revision is below one that arrived before it; lost:
 * acknowledged on the source, never seen on the destination.
 */
export function orderCheck(revisions: Float64Array, arrivals: PhaseArrivals | undefined): { checked: number; inversions: number; unseen: number[] } {
  let inversions = 0;
  let checked = 0;
  let highest = 0;
  for (const seq of arrivals?.order ?? []) {
    const rev = revisions[seq] ?? 0;
    if (rev <= 0) continue;
    checked++;
    if (rev < highest) inversions++;
    else highest = rev;
  }
  const unseen: number[] = [];
  for (let seq = 0; seq < revisions.length; seq++) if (revisions[seq]! > 0 && !arrivals?.has(seq)) unseen.push(seq);
  return { checked, inversions, unseen };
}
