// How a v3 destination's audit (audit.ts) reads at one point: a v3 range in pages pinned at a revision, and the
// v3 → v3 point logic. A v2 source's readers are in audit-readers-v2.ts (loaded only with a v2 side).
import { AuditAbortedError } from '../etcd/errors.js';
import type { KeyValue, V3Client } from '../etcd/v3/client.js';
import { entryDigest, type AuditEntry, type AuditReader, type Pages } from './audit.js';
import { keyId, type ByteKeyMap, type KeyRange } from './keyspace.js';
import type { SourceBudget } from './v2/source-budget.js';

const PAGE = 1000;

/** Waits for the source request budget before each source request (an expensive, password-checked source). */
export type Budget = Pick<SourceBudget, 'take'> | undefined;

export async function* once(entries: AuditEntry[]): Pages {
  yield entries;
}

/** A v3 range in pages, all at one revision (the first page's when none is given). */
export async function* v3Pages(client: V3Client, range: KeyRange, revision: number | undefined, keep: (kv: KeyValue) => AuditEntry | null, budget?: Budget, signal?: AbortSignal): Pages {
  let rev = revision;
  let from = range.key;
  for (;;) {
    await budget?.take('audit', signal);
    const page = await client.range(from, { rangeEnd: range.rangeEnd, revision: rev, limit: PAGE });
    rev ??= page.revision;
    const out: AuditEntry[] = [];
    for (const kv of page.kvs) {
      const e = keep(kv);
      if (e) out.push(e);
    }
    yield out;
    const last = page.kvs[page.kvs.length - 1];
    if (!page.more || !last) return;
    from = Buffer.concat([last.key, Buffer.from([0])]);
  }
}

const v3Entry = (id: Buffer, kv: KeyValue): AuditEntry => ({ id: keyId(id), digest: entryDigest(kv.value, kv.lease !== '0') });

/** Destination keys of a v3 destination the mirror owns, whose source counterpart it mirrors. */
export function v3Destination(keys: ByteKeyMap) {
  return (kv: KeyValue): AuditEntry | null => (keys.ownsDst(kv.key) && keys.mirrors(keys.toSrc(kv.key)) ? v3Entry(kv.key, kv) : null);
}

export const v3Name = (id: string): string => Buffer.from(id, 'latin1').toString('utf8');

/**
 * v3 → v3: the destination's checkpoint says R, written at destination revision H in the same Txn as the data it
 * covers, so the destination at H is the replica of the source at R: both are read pinned, exactly. `pin`:
 * - 'checkpoint' (the daemon, which has just written the checkpoint again between two Txns for the audit): the
 *   destination at H. Later Txns (the first parts of a revision split over several, a heal) are not seen.
 * - 'current' (the one-off command, no mirror's help): the destination at its current revision, which also shows
 *   changes made after H by others; while a mirror runs, a split revision in progress would show too.
 * A compacted R or H fails the read (CompactedError): the audit tries again at a newer checkpoint.
 */
export function v3PinnedReader(src: V3Client, dst: V3Client, keys: ByteKeyMap, budget?: Budget, pin: 'checkpoint' | 'current' = 'current'): AuditReader {
  return {
    pinned: true,
    name: v3Name,
    async point(signal) {
      const { kvs, revision } = await dst.range(keys.checkpointKey);
      const cp = kvs[0];
      const raw = cp?.value.toString('utf8').trim();
      if (cp === undefined || raw === undefined || !/^\d+$/.test(raw)) throw new AuditAbortedError('the destination holds no replication index yet');
      const at = Number(raw);
      const held = pin === 'checkpoint' ? cp.modRevision : revision;
      /** Source keys on a lease at R: their mod revision. */
      const leased = new Map<string, number>();
      const keep = (kv: KeyValue): AuditEntry | null => {
        if (!keys.mirrors(kv.key)) return null;
        const e = v3Entry(keys.toDst(kv.key), kv);
        if (kv.lease !== '0') leased.set(e.id, kv.modRevision);
        return e;
      };
      return {
        at,
        source: v3Pages(src, keys.srcRange, at, keep, budget, signal),
        destination: () => v3Pages(dst, keys.dstRange, held, v3Destination(keys), undefined, signal),
        async changedSince(ids, s) {
          const out = new Set<string>();
          for (const id of ids) {
            if (!leased.has(id)) continue;
            await budget?.take('audit', s);
            const now = (await src.range(keys.toSrc(Buffer.from(id, 'latin1')))).kvs[0];
            if (now?.modRevision !== leased.get(id)) out.add(id);
          }
          return out;
        },
      };
    },
  };
}

