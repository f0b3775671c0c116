// Make a v3 destination equal to a source snapshot without ever emptying it first: write what differs, delete
// what the source lacks, never touch an unchanged key. The last Txn carries the checkpoint (the snapshot's
// revision), so a crash half-way leaves the old checkpoint and the next start reconciles again.
import { MassDeleteRefusedError } from '../etcd/errors.js';
import { TooManyOpsError } from '../etcd/v3/errors.js';
import type { DstWrite, V3Destination } from './v3-destination.js';
import { judgeSnapshot, type GuardOptions } from './guard.js';
import { keyId, type ByteKeyMap } from './keyspace.js';
import type { LeaseMirror } from './leases.js';
import type { SnapshotEntry, SourceSnapshot } from './types.js';

export interface ResyncResult {
  written: number;
  deleted: number;
  unchanged: number;
}

export interface ResyncDeps {
  dst: V3Destination;
  keys: ByteKeyMap;
  leases: LeaseMirror;
  guard: GuardOptions;
}

export async function resync(
  deps: ResyncDeps,
  snapshot: SourceSnapshot,
  onProgress: (done: number, total: number) => void,
  signal: AbortSignal,
): Promise<ResyncResult> {
  const { dst, keys, leases } = deps;
  const have = await dst.readTree();
  // The source's entries by destination key, as they are (no copies): a large prefix's snapshot is held once per
  // side, and each destination entry is dropped once compared; what is left at the end, the source lacks.
  const wanted = new Map<string, SnapshotEntry>();
  for (const e of snapshot.entries) wanted.set(keyId(keys.toDst(e.key)), e);
  const refusal = judgeSnapshot(snapshot.revision, wanted.size, have.size, deps.guard);
  if (refusal) throw new MassDeleteRefusedError(refusal);

  const writes: DstWrite[] = [];
  let unchanged = 0;
  for (const [id, want] of wanted) {
    const cur = have.get(id);
    have.delete(id);
    const curLease = cur?.lease ?? '0';
    if (cur && cur.value.equals(want.value)) {
      if (!want.lease && curLease === '0') {
        unchanged++;
        continue;
      }
      // Same value on a live lease: a v3 copy keeps its lease id, a v2 TTL copy any lease we granted.
      if (want.lease && curLease !== '0' && (curLease === want.lease.id || want.lease.id.startsWith('v2:'))) {
        leases.adopt(want.lease, curLease);
        unchanged++;
        continue;
      }
    }
    const lease = want.lease ? await leases.attach(want.lease) : undefined;
    writes.push({ kind: 'put', key: keys.toDst(want.key), value: want.value, ...(lease ? { lease } : {}) });
  }
  wanted.clear();
  let deleted = 0;
  for (const cur of have.values()) {
    writes.push({ kind: 'delete', key: cur.key });
    deleted++;
  }
  have.clear();
  const total = writes.length;
  onProgress(0, total);
  let done = 0;
  // Room for the checkpoint in the last Txn.
  while (done < total || done === 0) {
    if (signal.aborted) throw signal.reason ?? new Error('aborted');
    const chunk = writes.slice(done, done + dst.maxOps - 1);
    const last = done + chunk.length >= total;
    try {
      await dst.commit(chunk, last ? snapshot.revision : null);
    } catch (err) {
      if (err instanceof TooManyOpsError) continue; // the limit was lowered: cut smaller chunks
      throw err;
    }
    done += chunk.length;
    onProgress(done, total);
    if (last) break;
  }
  leases.seeded = true;
  return { written: total - deleted, deleted, unchanged };
}
