// Heals the destination when someone else changes it. The mirror watches its own destination subtree; any event
// whose store index is not one of its own writes is foreign (a hand edit, a delete, a copy expiring early). Each
// affected subtree is then reconciled to the source — as a barrier in the writer, so that no replicated event is
// in flight meanwhile and every later one is applied after it — and the repairs are counted.
import { isWithin } from './etcd/paths.js';
import { KeyMap } from './keys.js';
import { reconcile, takeSnapshot } from './reconcile.js';
import type { RunnerDeps } from './runner.js';
import type { OrderedWriter } from './writer.js';

/** Store indexes of the destination writes this process made, remembered long enough to classify events. */
export class OwnWrites {
  readonly #seen = new Map<number, number>();
  static readonly KEEP_MS = 30_000;

  record(modifiedIndex: number): void {
    this.#seen.set(modifiedIndex, Date.now());
  }

  has(modifiedIndex: number): boolean {
    return this.#seen.has(modifiedIndex);
  }

  prune(now = Date.now()): void {
    for (const [index, at] of this.#seen) {
      if (now - at < OwnWrites.KEEP_MS) break; // insertion order is time order
      this.#seen.delete(index);
    }
  }
}

export type HealerDeps = Pick<RunnerDeps, 'src' | 'dst' | 'map' | 'log' | 'metrics' | 'own'> & {
  writer: () => OrderedWriter | null;
  concurrency: number;
};

/** Our own write's event can arrive before the write's response: classify events only after this delay. */
const CLASSIFY_AFTER_MS = 1_000;
/** A heal holds the writer: it must not wait long for an unreachable source. */
const HEAL_READ_TIMEOUT_MS = 5_000;
/** More foreign keys than this in one batch: reconcile the whole subtree once instead. */
const MAX_KEYS_PER_BATCH = 200;

export class Healer {
  readonly #abort = new AbortController();
  /** Events not yet classified: only what classification needs (a reload produces one per key written). */
  #pending: { index: number; key: string; at: number }[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: HealerDeps) {}

  start(): void {
    void this.#watch();
    this.#timer = setInterval(() => this.#classify(), 250);
  }

  stop(): void {
    this.#abort.abort();
    clearInterval(this.#timer);
  }

  async #watch(): Promise<void> {
    const { dst, map, log } = this.deps;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        const stream = await dst.stream(map.dstRoot, { recursive: true, signal });
        for (;;) {
          const ev = await stream.next();
          const key = ev.node.key ?? '/';
          // Copies expiring is normal (the source's own expire event follows); one that expires too early is the
          // TTL keeper's to recreate.
          if (ev.action === 'expire') continue;
          if (this.deps.own.has(ev.node.modifiedIndex)) continue; // our write, already answered
          if (map.ownsDst(key) || isWithin(map.dstRoot, key)) this.#pending.push({ index: ev.node.modifiedIndex, key, at: Date.now() });
        }
      } catch (err) {
        if (signal.aborted) return;
        log.debug({ err }, 'destination watch interrupted; foreign changes meanwhile are healed only by a reload');
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  }

  #classify(): void {
    const now = Date.now();
    this.deps.own.prune(now);
    const due = this.#pending.filter((p) => now - p.at >= CLASSIFY_AFTER_MS);
    if (due.length === 0) return;
    this.#pending = this.#pending.filter((p) => now - p.at < CLASSIFY_AFTER_MS);
    const foreign = due.filter((p) => !this.deps.own.has(p.index));
    if (foreign.length === 0) return;
    const { map } = this.deps;
    // Heal whole subtrees, top-most first; a change above the mirrored root means the root itself.
    let keys = [...new Set(foreign.map((p) => (isWithin(map.dstRoot, p.key) ? map.dstRoot : p.key)))].sort();
    keys = keys.filter((k, i) => !keys.slice(0, i).some((a) => isWithin(k, a)));
    if (keys.length > MAX_KEYS_PER_BATCH) keys = [map.dstRoot];
    this.deps.log.warn({ keys: keys.slice(0, 20), count: keys.length }, 'destination changed by someone else; healing from the source');
    const writer = this.deps.writer();
    if (!writer) return;
    writer.pushBarrier(async () => {
      for (const key of keys) {
        try {
          await this.#heal(key);
        } catch (err) {
          // A failed heal must not stop replication; the key is healed when it changes next, or by a reload.
          if (!this.#abort.signal.aborted) this.deps.log.warn({ err, key }, 'could not heal a destination key');
        }
      }
    });
  }

  async #heal(dstKey: string): Promise<void> {
    const { src, dst, map, metrics, log, concurrency } = this.deps;
    const srcKey = map.toSrc(dstKey);
    const snapshot = await takeSnapshot(src, srcKey, this.#abort.signal, HEAL_READ_TIMEOUT_MS);
    const subtree = new KeyMap(srcKey, dstKey, true, map.ignore);
    // The foreign change is what gets undone, however large: no mass-delete guard here.
    const result = await reconcile(snapshot, dst, subtree, { allowMassDelete: true, massDeleteRatio: 1, concurrency }, this.#abort.signal);
    const repaired = result.written + result.deleted;
    if (repaired > 0) {
      metrics.healed.labels({ reason: 'foreign change' }).inc(repaired);
      log.warn({ key: dstKey, written: result.written, deleted: result.deleted }, 'destination healed from the source');
    }
  }
}
