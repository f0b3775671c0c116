// Foreign changes on a v3 destination: the mirror watches the subtree it owns, and an event whose revision is
// none of its own writes (a hand edit, a delete, a copy's lease expiring early) names a key to heal. An event is
// classified once every write of ours that had begun before it arrived has answered, so its revision is known
// if it was ours (OwnWrites, shared with the v2 healer). Healing itself is the pipeline's: it restores the key
// to the source's state at the revision the destination is at, between two Txns.
import type { V3Client } from '../etcd/v3/client.js';
import type { OwnWrites } from './own-writes.js';
import type { Log } from './ports.js';
import { keyId, type ByteKeyMap } from './keyspace.js';

const CLASSIFY_EVERY_MS = 20;

export class DestinationWatch {
  #pending: { revision: number; key: Buffer; issued: number }[] = [];
  #close: (() => void) | null = null;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: V3Client,
    private readonly keys: ByteKeyMap,
    private readonly own: OwnWrites,
    private readonly log: Log,
    private readonly onForeign: (dstKeys: Buffer[]) => void,
  ) {}

  /** Watches from `fromRevision` (the destination's revision when the run began). */
  start(fromRevision: number): void {
    const watch = this.client.watch(this.keys.dstRange.key, this.keys.dstRange.rangeEnd, { startRevision: fromRevision, progressNotify: false, prevKv: true });
    this.#close = () => watch.close();
    this.#timer = setInterval(() => this.#classify(), CLASSIFY_EVERY_MS);
    this.#timer.unref();
    void (async () => {
      try {
        for await (const msg of watch) {
          if (msg.kind !== 'events') continue;
          for (const ev of msg.events) {
            if (!this.keys.ownsDst(ev.kv.key) || this.own.has(ev.kv.modRevision)) continue;
            // A leased copy going away is its lease's business (it expired after its source lease: copy-ttl.ts).
            if (ev.type === 'delete' && ev.prevKv && ev.prevKv.lease !== '0') continue;
            this.#pending.push({ revision: ev.kv.modRevision, key: ev.kv.key, issued: this.own.issued });
          }
        }
      } catch (err) {
        // Foreign changes go unseen until the next run's watch (or a --reload); replication itself goes on.
        this.log.warn({ err }, 'the destination watch ended; foreign changes are not healed until the mirror restarts its run');
      }
    })();
  }

  #classify(): void {
    this.own.prune();
    const oldestOpen = this.own.oldestOpen();
    let ready = 0;
    while (ready < this.#pending.length && this.#pending[ready]!.issued < oldestOpen) ready++;
    if (ready === 0) return;
    const due = this.#pending.splice(0, ready);
    const foreign = new Map<string, Buffer>();
    for (const p of due) if (!this.own.has(p.revision)) foreign.set(keyId(p.key), p.key);
    if (foreign.size > 0) this.onForeign([...foreign.values()]);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#close?.();
  }
}
