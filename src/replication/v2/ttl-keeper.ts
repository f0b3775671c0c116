// Keeps destination copies of TTL keys alive as long as the source keeps them. etcd sends no watch event for
// `refresh=true` TTL updates (lock keys are refreshed that way), so without this a copy would expire at the TTL
// it was written with while the source key lives on. Every tick re-reads the tracked source keys and, when a
// source expiration moved, moves the copy's along with a refresh (no value change, no destination event) to the
// source's remaining time plus the margin (copy-ttl.ts); the source's `expire` event removes the copy. Copies
// are only ever refreshed, never made permanent: if the mirror dies, they expire on their own — no immortal lock
// keys.
import PQueue from 'p-queue';
import { remainingTtl } from './apply.js';
import { copyTtl } from '../copy-ttl.js';
import type { EtcdClient } from '../../etcd/v2/client.js';
import { REMOVAL_ACTIONS, type EtcdEvent, type EtcdNode } from '../../etcd/v2/decode.js';
import { KeyNotFoundError, NodeExistError } from '../../etcd/errors.js';
import type { KeyMap } from '../keys.js';
import type { Log } from '../ports.js';
import { flatten } from './reconcile.js';
import type { V2Writer } from './writer.js';
import type { SourceBudget } from './source-budget.js';

export interface TtlKeeperDeps {
  src: EtcdClient;
  dst: EtcdClient;
  map: KeyMap;
  log: Log;
  /** Highest source index applied on the destination. */
  checkpoint: () => number;
  /** Orders the keeper's destination writes with the events for the same key. */
  writer: () => V2Writer | null;
  onRefresh?: () => void;
  /** Called after each tick with the number of tracked keys. */
  onTick?: (tracked: number) => void;
  intervalMs?: number;
  /** An expensive source's request budget: each re-read waits for a slot. */
  budget?: SourceBudget;
}

interface Tracked {
  /** Source expiration the destination copy was last brought in line with ('' = unknown: refresh at the next tick). */
  expiration: string;
  /** Index of the last event seen for this key. */
  lastEvent: number;
}

/** Expirations closer than this are the same (copies are written with whole-second TTLs). */
const SAME_EXPIRATION_MS = 500;

export class TtlKeeper {
  readonly #tracked = new Map<string, Tracked>();
  readonly #queue = new PQueue({ concurrency: 8 });
  /** Keys with a keeper write queued in the writer: one at a time per key. */
  readonly #queued = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(private readonly deps: TtlKeeperDeps) {}

  get size(): number {
    return this.#tracked.size;
  }

  /** Called for every mirrored event when it is received, before it is applied. */
  observe(ev: EtcdEvent): void {
    const key = ev.node.key;
    const removal = REMOVAL_ACTIONS.has(ev.action);
    if (removal) {
      // A dir going away takes its TTL children with it.
      for (const k of this.#tracked.keys()) if (k === key || k.startsWith(key + '/')) this.#tracked.delete(k);
      return;
    }
    if (ev.node.expiration) this.#tracked.set(key, { expiration: ev.node.expiration, lastEvent: ev.node.modifiedIndex });
    else this.#tracked.delete(key);
  }

  /** The tracked source keys (handed to the next runner, so a restart needs no source read). */
  keys(): string[] {
    return [...this.#tracked.keys()];
  }

  /** Tracks these keys; their copies are brought in line at the next tick. */
  seedKeys(keys: Iterable<string>): void {
    for (const key of keys) if (!this.#tracked.has(key)) this.#tracked.set(key, { expiration: '', lastEvent: 0 });
  }

  /** Tracks every TTL node of a source snapshot; their copies are brought in line at the next tick. */
  seed(root: EtcdNode | null): void {
    for (const [key, node] of flatten(root)) {
      if (!node.expiration || this.deps.map.scope(key, node.dir === true, 'get') !== 'mirrored') continue;
      if (!this.#tracked.has(key)) this.#tracked.set(key, { expiration: '', lastEvent: 0 });
    }
  }

  start(): void {
    const tick = async () => {
      if (this.#stopped) return;
      await this.#tick().catch((err: unknown) => this.deps.log.warn({ err }, 'TTL keeper tick failed'));
      if (!this.#stopped) this.#timer = setTimeout(tick, this.deps.intervalMs ?? 1_000);
    };
    this.#timer = setTimeout(tick, this.deps.intervalMs ?? 1_000);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#queue.clear();
    await this.#queue.onIdle();
  }

  async #tick(): Promise<void> {
    await Promise.all([...this.#tracked.keys()].map((key) => this.#queue.add(() => this.#keep(key))));
    this.deps.onTick?.(this.#tracked.size);
  }

  async #keep(srcKey: string): Promise<void> {
    const { src, map } = this.deps;
    if (this.#stopped || this.#queued.has(srcKey)) return;
    let node: EtcdNode;
    let readAt: number;
    let sourceNow: number;
    try {
      await this.deps.budget?.take('ttl');
      if (this.#stopped) return;
      const res = await src.get(srcKey);
      node = res.body.node;
      readAt = res.etcdIndex;
      sourceNow = src.serverNow();
    } catch (err) {
      if (err instanceof KeyNotFoundError) this.#tracked.delete(srcKey); // its delete/expire event follows
      else throw err;
      return;
    }
    const tracked = this.#tracked.get(srcKey);
    if (!tracked) return;
    if (!node.expiration) {
      this.#tracked.delete(srcKey);
      return;
    }
    if (tracked.lastEvent > readAt) return;
    // A refresh moves the node's modifiedIndex without a watch event, so the mirror may not have passed this
    // version yet (a proof must pass it first) while the destination already holds the key: waiting for that
    // would cost the copy ticks of its margin under steady refreshes. Its TTL may move now; recreating it, which
    // writes the value, must wait until the destination holds everything up to this version.
    const mayCreate = this.deps.checkpoint() >= node.modifiedIndex;
    if (tracked.expiration && Math.abs(Date.parse(tracked.expiration) - Date.parse(node.expiration)) < SAME_EXPIRATION_MS) return;
    // A GET's `ttl` is the remaining seconds on the source, rounded up, computed by the source itself.
    const ttl = copyTtl(node.ttl ?? remainingTtl(node.expiration, sourceNow));
    const writer = this.deps.writer();
    if (!writer || writer.failed) return;
    const dstKey = map.toDst(srcKey);
    const expiration = node.expiration;
    this.#queued.add(srcKey);
    writer.pushKeyed(dstKey, async () => {
      try {
        // Every earlier event for this key is applied now. Still tracked, and no event after our read?
        const now = this.#tracked.get(srcKey);
        if (this.#stopped || !now || now.lastEvent > readAt) return;
        if (!(await this.#write(dstKey, node, ttl, mayCreate))) return;
        now.expiration = expiration;
        this.deps.onRefresh?.();
      } catch (err) {
        // A keeper write never stops replication; the next tick tries again.
        if (!this.#stopped) this.deps.log.warn({ err, key: dstKey }, 'could not keep a TTL copy alive');
      } finally {
        this.#queued.delete(srcKey);
      }
    });
  }

  /** False when the copy is missing and may not be recreated yet (the next tick tries again). */
  async #write(dstKey: string, node: EtcdNode, ttl: number, mayCreate: boolean): Promise<boolean> {
    const { dst } = this.deps;
    try {
      await dst.put(dstKey, { dir: node.dir, refresh: true, prevExist: true, ttl });
    } catch (err) {
      if (!(err instanceof KeyNotFoundError)) throw err;
      if (!mayCreate) return false;
      // The copy expired before the source's (e.g. the mirror was down for longer than the TTL): recreate it.
      try {
        await dst.put(dstKey, node.dir ? { dir: true, ttl, prevExist: false } : { value: node.value ?? '', ttl, prevExist: false });
      } catch (inner) {
        if (!(inner instanceof NodeExistError)) throw inner;
      }
    }
    return true;
  }
}
