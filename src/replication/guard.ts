// The mass-delete guard, shared by every reconcile (v2 and v3 destinations).

export interface GuardOptions {
  allowMassDelete: boolean;
  /** How much smaller than the replica a source snapshot may be (as a share of the replica's keys) unattended. */
  massDeleteRatio: number;
  /** Whether an empty snapshot facing a non-empty replica is suspect (true for the mirror's whole root). @default true */
  emptyIsSuspect?: boolean;
}

/** Below this many replica keys the size rule does not apply: a few keys may come and go. */
const MIN_KEYS_JUDGED = 10;

/**
 * The mass-delete guard judges the snapshot, not the diff: a source read that looks wrong (empty, or much smaller
 * than the replica: truncated, or the wrong cluster or prefix) must never delete the replica (consul-replicate
 * #82), while a plausible one is reconciled however much of a small replica must go — after a busy outage the
 * source may have grown fivefold while deleting half of what the replica holds. Returns why it is refused.
 */
export function judgeSnapshot(etcdIndex: number, sourceKeys: number, replicaKeys: number, guard: GuardOptions): string | null {
  if (guard.allowMassDelete || replicaKeys === 0) return null;
  const hint = 'pass --allow-mass-delete if this is intended';
  if (sourceKeys === 0) {
    if (guard.emptyIsSuspect === false) return null;
    return `refusing to reconcile: the source snapshot at index ${etcdIndex} is empty while the replica holds ${replicaKeys} keys (${hint})`;
  }
  if (replicaKeys >= MIN_KEYS_JUDGED && sourceKeys < (1 - guard.massDeleteRatio) * replicaKeys) {
    return `refusing to reconcile: the source snapshot at index ${etcdIndex} holds ${sourceKeys} keys, less than ${Math.round((1 - guard.massDeleteRatio) * 100)}% of the replica's ${replicaKeys}: it looks truncated (${hint})`;
  }
  return null;
}
