// Foreign changes on a v3 destination: the mirror watches the subtree it owns, and an event whose revision is
// none of its own writes (a hand edit, a delete, a copy's lease expiring early) names a key to heal. An event is
// classified once every write of ours that had begun before it arrived has answered, so its revision is known
// if it was ours (OwnWrites, shared with the v2 healer). Healing itself is the pipeline's: it restores the key
// to the source's state at the revision the destination is at, between two Txns.
import type { V3Client } from '../etcd/v3/client.js';
import { ForeignChanges, type OwnWrites } from './own-writes.js';
import type { Log } from './ports.js';
import { keyId, type ByteKeyMap } from './keyspace.js';

const CLASSIFY_EVERY_MS = 20;

export class DestinationWatch {
  readonly #changes: ForeignChanges<Buffer>;
  #close: (() => void) | null = null;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: V3Client,
    private readonly keys: ByteKeyMap,
    own: OwnWrites,
    private readonly log: Log,
    private readonly onForeign: (dstKeys: Buffer[]) => void,
  ) {
    this.#changes = new ForeignChanges(own);
  }

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
            if (!this.keys.ownsDst(ev.kv.key)) continue;
            // A leased copy going away is its lease's business (it expired after its source lease: copy-ttl.ts).
            if (ev.type === 'delete' && ev.prevKv && ev.prevKv.lease !== '0') continue;
            this.#changes.note(ev.kv.modRevision, ev.kv.key);
          }
        }
      } catch (err) {
        // Foreign changes go unseen until the next run's watch (or a --reload); replication itself goes on.
        this.log.warn({ err }, 'the destination watch ended; foreign changes are not healed until the mirror restarts its run');
      }
    })();
  }

  #classify(): void {
    const foreign = new Map<string, Buffer>();
    for (const key of this.#changes.take().foreign) foreign.set(keyId(key), key);
    if (foreign.size > 0) this.onForeign([...foreign.values()]);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#close?.();
  }
}
