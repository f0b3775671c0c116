// The audit's comparison and point logic on fakes: what counts as a difference, what is in flight, what is
// aborted, and that repairs go through the engine's hook behind the guard.
import { describe, expect, it } from 'vitest';
import { ChangeTracker, compareSides, entryDigest, runAudit, type AuditEngine, type AuditEntry, type AuditReader } from '../../src/replication/audit.js';
import { CompactedError } from '../../src/etcd/v3/errors.js';

const e = (id: string, value: string | null, ttl = false): AuditEntry => ({ id, digest: entryDigest(value, ttl) });
async function* pages(...ps: AuditEntry[][]) {
  for (const p of ps) yield p;
}
const opts = { name: (id: string) => id, listLimit: 2, repairLimit: 3 };

describe('compareSides', () => {
  it('names each kind of difference; equal keys are not listed', async () => {
    const src = [e('/a', '1'), e('/b', '2'), e('/c', '3', true), e('/d', null), e('/missing', 'm')];
    const dst = [e('/a', '1'), e('/b', 'changed'), e('/c', '3'), e('/d', 'file'), e('/extra', 'x')];
    const cmp = await compareSides(pages(src.slice(0, 2), src.slice(2)), () => pages(dst.slice(0, 3), dst.slice(3)), { ...opts, listLimit: 10, repairLimit: 10 });
    expect(cmp).toMatchObject({ sourceKeys: 5, destinationKeys: 5, differing: 5, inFlight: 0 });
    expect(cmp.listed).toEqual([
      { key: '/b', kind: 'value' },
      { key: '/c', kind: 'ttl' },
      { key: '/d', kind: 'type' },
      { key: '/extra', kind: 'extra' },
      { key: '/missing', kind: 'missing' },
    ]);
    expect(cmp.repair.sort()).toEqual(['/b', '/c', '/d', '/extra', '/missing']);
  });

  it('counts every difference but lists and repairs a bounded number', async () => {
    const src = Array.from({ length: 10 }, (_, i) => e(`/k${i}`, 'v'));
    const cmp = await compareSides(pages(src), () => pages([]), opts);
    expect(cmp.differing).toBe(10);
    expect(cmp.listed).toHaveLength(2);
    expect(cmp.repair).toHaveLength(3);
  });

  it('keys changed on the source after the point are in flight, not differences', async () => {
    const cmp = await compareSides(pages([e('/a', '1'), e('/b', '1')]), () => pages([e('/a', '2'), e('/c', '1')]), { ...opts, changed: (id) => id !== '/b' });
    expect(cmp).toMatchObject({ differing: 1, inFlight: 2, listed: [{ key: '/b', kind: 'missing' }] });
  });

  it('a missing copy of an expiring key the source has changed since the point is in flight (its copy ran out)', async () => {
    const asked: string[][] = [];
    const changedSince = async (ids: string[]) => {
      asked.push(ids);
      return new Set(['/expired']);
    };
    const src = [e('/expired', '1', true), e('/lost', '1', true), e('/kept', '1')];
    const cmp = await compareSides(pages(src), () => pages([e('/kept', '1')]), { ...opts, changedSince });
    expect(cmp).toMatchObject({ differing: 1, inFlight: 1, listed: [{ key: '/lost', kind: 'missing' }] });
    expect(asked).toEqual([['/expired', '/lost']]);
  });
});

describe('ChangeTracker', () => {
  it('a v2 event also touches the directories it may have created above its key', () => {
    const t = new ChangeTracker(10);
    t.note('/a/dir/sub/x', 10, false, true);
    expect(['/a/dir', '/a/dir/sub', '/a', '/a/dir/sub/x'].map((id) => t.changedAfter(id, 9))).toEqual([true, true, true, true]);
    expect(t.changedAfter('/a/other', 9)).toBe(false);
    expect(t.changedAfter('/a/dir', 10)).toBe(false);
  });

  it('knows keys and subtrees changed after an index; overflows instead of growing', () => {
    const t = new ChangeTracker(2);
    t.note('/a', 10, false);
    t.note('/dir', 12, true);
    expect(t.changedAfter('/a', 9)).toBe(true);
    expect(t.changedAfter('/a', 10)).toBe(false);
    expect(t.changedAfter('/dir/x/y', 11)).toBe(true);
    expect(t.changedAfter('/dirx', 11)).toBe(false);
    t.note('/b', 13, false);
    t.note('/c', 14, false);
    expect(t.overflow).toBe(true);
  });
});

function fakeEngine(applied: number | null): AuditEngine & { healed: string[][] } {
  const healed: string[][] = [];
  return {
    healed,
    trackers: new Set(),
    applied: () => applied,
    heal: async (ids) => {
      healed.push(ids);
      return ids.length;
    },
  };
}

const reader = (at: number, src: AuditEntry[], dst: AuditEntry[], pinned = true): AuditReader => ({
  pinned,
  name: (id) => id,
  point: async () => ({ at, source: pages(src), destination: () => pages(dst) }),
});
const guard = { allowMassDelete: false, massDeleteRatio: 0.5 };
const noWait = async () => {};

describe('runAudit', () => {
  it('repairs what differs through the engine and reports it', async () => {
    const engine = fakeEngine(7);
    const r = await runAudit({ reader: reader(7, [e('/a', '1'), e('/b', '2')], [e('/a', '1')]), engine, guard, wait: noWait }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'different', at: 7, keys: 2, differing: 1, repaired: 1 });
    expect(engine.healed).toEqual([['/b']]);
  });

  it('an equal replica says so and repairs nothing', async () => {
    const engine = fakeEngine(7);
    const r = await runAudit({ reader: reader(7, [e('/a', '1')], [e('/a', '1')]), engine, guard, wait: noWait }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'equal', differing: 0, repaired: 0 });
    expect(engine.healed).toEqual([]);
  });

  it('a mass difference is refused by the guard: reported, not repaired', async () => {
    const engine = fakeEngine(7);
    const dst = Array.from({ length: 20 }, (_, i) => e(`/k${i}`, 'v'));
    const r = await runAudit({ reader: reader(7, [e('/k0', 'v')], dst), engine, guard, wait: noWait }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'different', differing: 19, repaired: 0 });
    expect(r.reason).toMatch(/refusing/);
    expect(engine.healed).toEqual([]);
  });

  it('a compacted point is tried again, then aborted: never a difference', async () => {
    let reads = 0;
    const compacted: AuditReader = {
      pinned: true,
      name: (id) => id,
      point: async () => {
        reads++;
        throw new CompactedError(100, 'compacted');
      },
    };
    const r = await runAudit({ reader: compacted, engine: fakeEngine(7), guard, wait: noWait }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'aborted', differing: 0 });
    expect(reads).toBe(3);
  });

  it('unpinned: waits for the mirror to apply past the point, and keys changed after it are in flight', async () => {
    let applied = 3;
    const engine = fakeEngine(null);
    engine.applied = () => applied;
    const src = [e('/a', 'old'), e('/b', 'old')];
    const unpinned: AuditReader = {
      pinned: false,
      name: (id) => id,
      point: async () => ({
        at: 5,
        source: pages(src),
        destination: () => {
          // The destination shows /a as a source event after the point left it.
          expect(applied).toBeGreaterThanOrEqual(5);
          for (const t of engine.trackers) t.note('/a', 6, false);
          return pages([e('/a', 'new'), e('/b', 'wrong')]);
        },
      }),
    };
    const r = await runAudit({ reader: unpinned, engine, guard, wait: async () => void (applied += 1) }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'different', differing: 1, listed: [{ key: '/b', kind: 'value' }] });
    expect(engine.trackers.size).toBe(0);
  });

  it('unpinned: aborted when a new run started while the destination was read (a resync writes unnoted)', async () => {
    const engine = fakeEngine(5);
    const resynced: AuditReader = {
      pinned: false,
      name: (id) => id,
      point: async () => ({
        at: 5,
        source: pages([e('/a', 'v')]),
        destination: () => {
          for (const t of engine.trackers) t.interrupted = true;
          return pages([]);
        },
      }),
    };
    const r = await runAudit({ reader: resynced, engine, guard, wait: noWait }, new AbortController().signal);
    expect(r).toMatchObject({ result: 'aborted', differing: 0, reason: 'the mirror started a new run during the audit' });
    expect(engine.healed).toEqual([]);
  });

  it('unpinned: aborted when the mirror is not tailing', async () => {
    const r = await runAudit({ reader: reader(5, [], [], false), engine: fakeEngine(null), guard, wait: noWait }, new AbortController().signal);
    expect(r.result).toBe('aborted');
  });
});
