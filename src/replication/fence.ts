// The switchover fence: a key on the destination that `etcd-mirror switchover` writes when the replica becomes the
// primary. It is keyed by the destination subtree the mirror writes (its dstRoot), so it fences every mirror
// instance writing there, on any host, whatever spelling of the same mapping its flags use; and switching back
// lifts exactly the fence that direction got. It lives under /__replication: hidden from v2 recursive reads and
// left out by v3 sources, so no mirror copies it.
// A v3 destination's every Txn compares it (absent), so etcd itself refuses a fenced write. A v2 destination has no
// multi-key conditions: as with the v2 HA fence, every write checks a flag as it is sent, and the flag is set by a
// poll of the key (FenceWatch), so a fenced instance stops within one poll plus the writes already on the wire.

/** How often a running mirror reads its fence key: a switchover waits twice this before relying on it (v2). */
export const FENCE_POLL_MS = 500;

/** `/__replication/__FENCE__|a|b` for the subtree /a/b: one flat key (a v2 key cannot be both a value and a dir). */
export function fenceKey(dstRoot: string): string {
  return `/__replication/__FENCE__${dstRoot === '/' ? '' : dstRoot.replaceAll('/', '|')}`;
}

/** What the fence key holds: enough for /state and the log to say which switchover fenced this direction. */
export interface FenceRecord {
  /** ISO time of the switchover. */
  at: string;
  /** Origins (no credentials) of the old source and the new primary. */
  from: string;
  to: string;
  /** OLD's store index / revision the mirror had caught up to when fenced (a rerun checks against it: the
   * switchover's own writes on OLD move OLD's index afterwards). */
  oldIndex?: number;
}

export function encodeFence(record: FenceRecord): string {
  return JSON.stringify({ by: 'etcd-mirror switchover', ...record });
}

export function parseFence(raw: string): FenceRecord | null {
  try {
    const v = JSON.parse(raw) as Partial<FenceRecord>;
    if (typeof v.at !== 'string' || typeof v.from !== 'string' || typeof v.to !== 'string') return null;
    return { at: v.at, from: v.from, to: v.to, ...(typeof v.oldIndex === 'number' ? { oldIndex: v.oldIndex } : {}) };
  } catch {
    return null;
  }
}

/** The one line a fenced instance says (log, /state reason, refusal at start). */
export function describeFence(raw: string): string {
  const r = parseFence(raw);
  return r
    ? `fenced by a switchover at ${r.at}: ${r.to} is the primary now; the mirror ${r.from} → ${r.to} must not write into it (run the reverse mirror instead)`
    : `fenced by a switchover (fence key value unreadable: ${JSON.stringify(raw.slice(0, 80))})`;
}

/**
 * Polls the fence key. `reason` is set (and `onFenced` called once) as soon as the key is seen; a failed read is
 * retried at the next poll (the v3 compare, or the startup check, covers an unreachable destination).
 */
export class FenceWatch {
  #reason: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(
    /** The fence key's value, null when absent. */
    private readonly read: () => Promise<string | null>,
    private readonly everyMs = FENCE_POLL_MS,
  ) {}

  /** Why this direction is fenced; null while it is not (known to be). */
  get reason(): string | null {
    return this.#reason;
  }

  async check(): Promise<string | null> {
    const raw = await this.read();
    if (raw !== null && this.#reason === null) this.#reason = describeFence(raw);
    return this.#reason;
  }

  start(onFenced: (reason: string) => void): void {
    const tick = async () => {
      const reason = await this.check().catch(() => null);
      if (this.#stopped) return;
      if (reason !== null) {
        onFenced(reason);
        return;
      }
      this.#timer = setTimeout(tick, this.everyMs);
      this.#timer.unref();
    };
    void tick();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }
}
