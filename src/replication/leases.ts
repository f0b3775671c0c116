// Leased source keys get destination copies on destination leases: one per source lease (a v3 source lease's
// copy has the same lease id, so a restarted mirror finds its leases again). A destination lease is granted with
// copyTtl(the source lease's granted TTL): a keepalive resets it to that, at least the source's remaining time
// plus the margin (copy-ttl.ts). Keepalives on the source produce no watch event, so the source lease is asked
// every third of that TTL whether it still lives, and while it does its copy is kept alive: a copy cannot lapse
// while its source lease lives. Once the source lease is gone nothing is revoked: the source's own deletes (of
// its expiry or revoke) remove the keys when they are replayed, at the source's moment, and the destination
// lease, no longer kept alive, expires on its own. (A revoke there removed copies before the source did: a v3
// lease reports 0 s in its last second, and the source deletes its keys only at its next expiry check.)
import type { V3Client } from '../etcd/v3/client.js';
import { copyTtl } from './copy-ttl.js';
import type { Log } from './ports.js';
import type { LeaseRef, Source } from './types.js';

const MIN_CHECK_MS = 500;
const TICK_MS = 250;

interface Tracked {
  ref: LeaseRef;
  dstId: string;
  /** TTL the destination lease was granted with (a keepalive resets it to this). */
  dstTtl: number;
  nextCheckAt: number;
}

export class LeaseMirror {
  readonly #tracked = new Map<string, Tracked>();
  readonly #granting = new Map<string, Promise<string>>();
  #timer: NodeJS.Timeout | undefined;
  #checking = false;
  /** Whether the leases of copies already on the destination are known (after a restart they are read once). */
  seeded = false;

  constructor(
    private readonly source: Source,
    private readonly dst: V3Client,
    private readonly log: Log,
    private readonly onCount: (n: number) => void = () => {},
  ) {}

  get size(): number {
    return this.#tracked.size;
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.#check(), TICK_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** The destination lease for a source lease, granted on first use. */
  attach(ref: LeaseRef): Promise<string> {
    const known = this.#tracked.get(ref.id);
    if (known) return Promise.resolve(known.dstId);
    let granting = this.#granting.get(ref.id);
    if (!granting) {
      granting = this.#grant(ref).finally(() => this.#granting.delete(ref.id));
      this.#granting.set(ref.id, granting);
    }
    return granting;
  }

  /** A destination key found on a lease (after a restart or in a reconcile): keep that lease alive too. */
  adopt(ref: LeaseRef, dstId: string): void {
    if (this.#tracked.has(ref.id)) return;
    this.#track(ref, dstId, copyTtl(ref.grantedTtl));
  }

  /** The destination lease a source lease maps to when it is already known (reconcile compares with it). */
  known(ref: LeaseRef): string | undefined {
    return this.#tracked.get(ref.id)?.dstId;
  }

  async #grant(ref: LeaseRef): Promise<string> {
    const ttl = copyTtl(ref.grantedTtl);
    // A v3 source lease keeps its id on the destination; a v2 TTL key gets a fresh one.
    const wantId = ref.id.startsWith('v2:') ? undefined : ref.id;
    let dstId: string;
    try {
      dstId = (await this.dst.leaseGrant(ttl, wantId)).id;
    } catch (err) {
      // Granted before (by us, before a restart): it is ours if it is still alive.
      if (wantId === undefined || (await this.dst.leaseKeepAliveOnce(wantId).catch(() => 0)) <= 0) throw err;
      dstId = wantId;
    }
    this.#track(ref, dstId, ttl);
    return dstId;
  }

  #track(ref: LeaseRef, dstId: string, dstTtl: number): void {
    this.#tracked.set(ref.id, { ref, dstId, dstTtl, nextCheckAt: Date.now() + this.#interval(dstTtl) });
    this.onCount(this.#tracked.size);
  }

  #interval(dstTtl: number): number {
    return Math.max(MIN_CHECK_MS, (dstTtl * 1000) / 3);
  }

  async #check(): Promise<void> {
    if (this.#checking) return;
    this.#checking = true;
    try {
      const now = Date.now();
      const due = [...this.#tracked.values()].filter((t) => t.nextCheckAt <= now);
      await Promise.all(due.map((t) => this.#follow(t)));
    } finally {
      this.#checking = false;
    }
  }

  async #follow(t: Tracked): Promise<void> {
    try {
      // ≥ 0 while the source lease lives (0: its last second), < 0 once it is gone.
      if ((await this.source.leaseRemaining(t.ref)) >= 0) {
        const ttl = await this.dst.leaseKeepAliveOnce(t.dstId);
        if (ttl > 0) {
          t.nextCheckAt = Date.now() + this.#interval(t.dstTtl);
          return;
        }
        // The copy's lease expired on the destination (the mirror was away too long): the next write of those
        // keys grants a new one; until then they are gone, as a v2 copy whose TTL ran out.
        this.log.warn({ lease: t.ref.id }, 'a destination lease expired while its source lease lives on');
      }
      this.#tracked.delete(t.ref.id);
      this.onCount(this.#tracked.size);
    } catch (err) {
      // Asked again soon; the destination lease lives for its TTL meanwhile.
      this.log.debug({ err, lease: t.ref.id }, 'lease check failed');
      t.nextCheckAt = Date.now() + MIN_CHECK_MS;
    }
  }
}
