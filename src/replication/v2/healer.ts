// Heals a v2 destination when someone else changes it. The mirror watches its own destination subtree; any event
// whose store index is not one of its own writes is foreign (a hand edit, a delete, a copy expiring early). The
// affected keys go to the pipeline's heal queue (src/replication/pipeline.ts), which has each subtree reconciled
// to the source here — between two writes, so that no replicated event is in flight meanwhile and every later one
// is applied after it — and the repairs are counted. The snapshot a heal uses is newer than the writer's position:
// the destination skips the events it already contains (no rewinds, coverage.ts).
import { isWithin } from '../../etcd/v2/paths.js';
import { KeyMap } from '../keys.js';
import type { GuardOptions } from '../guard.js';
import { reconcile, takeSnapshot } from './reconcile.js';
import type { EtcdClient } from '../../etcd/v2/client.js';
import { ForeignChanges, type OwnWrites } from '../own-writes.js';
import type { Log, ReplicationMetrics } from '../ports.js';

export interface HealerDeps {
  src: EtcdClient;
  dst: EtcdClient;
  map: KeyMap;
  log: Log;
  metrics: ReplicationMetrics;
  own: OwnWrites;
  /** Destination keys (top-most subtrees) someone else changed, to heal. */
  foreign: (dstKeys: string[]) => void;
  concurrency: number;
  /** The same mass-delete guard as every reconcile. */
  guard: Pick<GuardOptions, 'allowMassDelete' | 'massDeleteRatio'>;
  /** A subtree (source key) was reconciled to the source snapshot at `index`. */
  covered: (srcKey: string, index: number) => void;
}

/** A heal holds the writer: it must not wait long for an unreachable source. */
const HEAL_READ_TIMEOUT_MS = 5_000;
/** More foreign keys than this in one batch: reconcile the whole subtree once instead. */
export const MAX_KEYS_PER_BATCH = 200;
/** Unclassified events kept at most; beyond, the whole root is healed once (a flood of foreign changes). */
const MAX_PENDING = 10_000;

/** The top-most of `keys`: none kept lies within another kept one. Linear in keys × depth. */
export function topMost(keys: Iterable<string>): string[] {
  const sorted = [...new Set(keys)].sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
  const kept = new Set<string>();
  for (const key of sorted) {
    let covered = kept.has('/');
    for (let i = key.indexOf('/', 1); !covered && i !== -1; i = key.indexOf('/', i + 1)) covered = kept.has(key.slice(0, i));
    if (!covered && !kept.has(key)) kept.add(key);
  }
  return [...kept].sort();
}

export class Healer {
  readonly #abort = new AbortController();
  /** Destination events not yet classified (a flood beyond MAX_PENDING heals the whole root once). */
  readonly #changes: ForeignChanges<string>;
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: HealerDeps) {
    this.#changes = new ForeignChanges(deps.own, MAX_PENDING);
  }

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
          // A copy expiring on its own is normal when the source's expire event comes later than the margin
          // (copy-ttl.ts); one that expires while the source key lives is the TTL keeper's to recreate.
          if (ev.action === 'expire') continue;
          if (!map.ownsDst(key) && !isWithin(map.dstRoot, key)) continue;
          this.#changes.note(ev.node.modifiedIndex, key);
        }
      } catch (err) {
        if (signal.aborted) return;
        log.debug({ err }, 'destination watch interrupted; foreign changes meanwhile are healed only by a reload');
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  }

  #classify(): void {
    const { map } = this.deps;
    const taken = this.#changes.take();
    const foreign = taken.foreign.map((key) => (isWithin(map.dstRoot, key) ? map.dstRoot : key));
    if (taken.overflow) foreign.push(map.dstRoot);
    if (foreign.length === 0) return;
    // Heal whole subtrees, top-most first; a change above the mirrored root means the root itself.
    let keys = topMost(foreign);
    if (keys.length > MAX_KEYS_PER_BATCH) keys = [map.dstRoot];
    this.deps.log.warn({ keys: keys.slice(0, 20), count: keys.length }, 'destination changed by someone else; healing from the source');
    this.deps.foreign(keys);
  }

  /** Reconciles one destination subtree to the source; returns the keys written or deleted. */
  async heal(dstKey: string, reason: string): Promise<number> {
    const { src, dst, map, metrics, log, concurrency, guard } = this.deps;
    const srcKey = map.toSrc(dstKey);
    const snapshot = await takeSnapshot(src, srcKey, this.#abort.signal, HEAL_READ_TIMEOUT_MS);
    const subtree = new KeyMap(srcKey, dstKey, true, map.ignore);
    // The guard judges the snapshot as for any reconcile. Below the root an empty source subtree is the normal
    // answer for keys someone added on the destination only.
    const result = await reconcile(
      snapshot,
      dst,
      subtree,
      { ...guard, emptyIsSuspect: dstKey === map.dstRoot, concurrency, nowMs: () => src.serverNow() },
      this.#abort.signal,
    );
    this.deps.covered(srcKey, snapshot.etcdIndex);
    const repaired = result.written + result.deleted;
    if (repaired > 0) {
      metrics.healed.labels({ reason }).inc(repaired);
      log.warn({ key: dstKey, written: result.written, deleted: result.deleted, reason }, 'destination healed from the source');
    }
    return repaired;
  }
}
