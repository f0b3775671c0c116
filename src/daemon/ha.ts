// --ha: this instance's side of the lock on the destination. The machine asks it to campaign (standby) and hears
// from it when the lock is lost; while active it renews the lock every TTL/3 and, measured on its own monotonic
// clock, stands down once 2/3 of the TTL pass without a successful renewal — before the lock can expire on the
// server. Standing down early is the courtesy; the fence on every Txn is the guarantee.
import { performance } from 'node:perf_hooks';
import type { CampaignOutput, MirrorEvent } from '../../machines/types.js';
import type { HaLock } from '../replication/ha-lock.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

const DEADLINE_CHECK_MS = 100;

export class HaController {
  #renewTimer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #lastRenewAt = 0;
  #heldSince: number | null = null;
  #holder: string | null = null;
  #send: ((e: MirrorEvent) => void) | null = null;

  constructor(
    private readonly lock: HaLock,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.#setRole('standby');
  }

  /** Where lock.lost goes (the running machine). */
  connect(send: (e: MirrorEvent) => void): void {
    this.#send = send;
  }

  get role(): 'active' | 'standby' {
    return this.lock.held ? 'active' : 'standby';
  }

  /** For /state: who holds the lock, and for how long (for another holder: since this instance first saw it). */
  view(): { instanceId: string; role: 'active' | 'standby'; holder: string | null; heldForSeconds: number | null } {
    return {
      instanceId: this.lock.instanceId,
      role: this.role,
      holder: this.lock.held ? this.lock.instanceId : this.#holder,
      heldForSeconds: this.#heldSince === null ? null : Math.round((Date.now() - this.#heldSince) / 100) / 10,
    };
  }

  async campaign(): Promise<CampaignOutput> {
    if (await this.lock.tryAcquire()) {
      this.#holder = this.lock.instanceId;
      this.#heldSince = Date.now();
      this.#lastRenewAt = performance.now();
      this.metrics.haTakeovers.inc();
      this.#setRole('active');
      this.log.info({ instanceId: this.lock.instanceId, ttlSeconds: this.ttlSeconds }, 'HA: took the lock; this instance is active');
      this.#startRenewing();
      return { acquired: true, holder: this.lock.instanceId };
    }
    const { holder } = await this.lock.state();
    // The lock carries no time: another holder's tenure is counted from when this instance first saw it.
    if (holder !== this.#holder || this.#heldSince === null) this.#heldSince = holder === null ? null : Date.now();
    this.#holder = holder;
    return { acquired: false, holder };
  }

  /** Resolves when the lock is deleted or expires (a standby's cue to campaign at once). */
  async released(signal: AbortSignal): Promise<void> {
    const { createRevision } = await this.lock.state();
    if (createRevision === 0) return;
    await this.lock.released(createRevision, signal);
  }

  /** Writes may go out: the lock is ours and was renewed within its deadline (checked before each v2 write). */
  mayWrite(): boolean {
    return this.lock.held && performance.now() - this.#lastRenewAt <= (this.ttlSeconds * 1000 * 2) / 3;
  }

  /** The machine stood down (lock.lost, or a fenced write): stop renewing; writes stay fenced. */
  standDown(reason: string): void {
    if (!this.lock.held && this.#renewTimer === undefined) return;
    this.#stopRenewing();
    this.lock.abandon();
    this.#heldSince = null;
    this.#holder = null;
    this.#setRole('standby');
    this.log.warn({ instanceId: this.lock.instanceId, reason }, 'HA: standing by');
  }

  /** Graceful stop: let a standby take over without waiting for the TTL. */
  async release(): Promise<void> {
    this.#stopRenewing();
    if (!this.lock.held) return;
    try {
      await this.lock.release();
      this.log.info({ instanceId: this.lock.instanceId }, 'HA: lock released');
    } catch (err) {
      this.log.warn({ err }, 'HA: could not release the lock; it expires after its TTL');
    }
    this.#heldSince = null;
    this.#setRole('standby');
  }

  #setRole(role: 'active' | 'standby'): void {
    this.metrics.haRole.labels({ role: 'active' }).set(role === 'active' ? 1 : 0);
    this.metrics.haRole.labels({ role: 'standby' }).set(role === 'standby' ? 1 : 0);
  }

  #lost(reason: string): void {
    this.standDown(reason);
    this.#send?.({ type: 'lock.lost', reason });
  }

  #startRenewing(): void {
    const deadlineMs = (this.ttlSeconds * 1000 * 2) / 3;
    let renewing = false;
    this.#renewTimer = setInterval(() => {
      if (renewing) return;
      renewing = true;
      const sentAt = performance.now();
      this.lock
        .renew()
        .then((still) => {
          if (still) this.#lastRenewAt = Math.max(this.#lastRenewAt, sentAt);
          else this.#lost('the lock is no longer ours (expired or taken over)');
        })
        .catch((err: unknown) => this.log.warn({ err }, 'HA: lock renewal failed; retrying until the deadline'))
        .finally(() => (renewing = false));
    }, (this.ttlSeconds * 1000) / 3);
    this.#deadlineTimer = setInterval(() => {
      const since = performance.now() - this.#lastRenewAt;
      if (since > deadlineMs) this.#lost(`no lock renewal for ${(since / 1000).toFixed(1)} s: standing down before the lock can expire`);
    }, DEADLINE_CHECK_MS);
  }

  #stopRenewing(): void {
    clearInterval(this.#renewTimer);
    clearInterval(this.#deadlineTimer);
    this.#renewTimer = this.#deadlineTimer = undefined;
  }
}
