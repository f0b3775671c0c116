// Small parts that keep the replica faithful: heal coverage (no rewinds), write retries, the snapshot guard,
// own-write classification and the healer's top-most subtree selection.
import { describe, expect, it } from 'vitest';
import { Coverage } from '../../src/replication/v2/coverage.js';
import { DestinationWriteError, KeyNotFoundError, TransportError, UnauthorizedError } from '../../src/etcd/errors.js';
import { topMost } from '../../src/replication/v2/healer.js';
import { ForeignChanges, OwnWrites } from '../../src/replication/own-writes.js';
import { judgeSnapshot } from '../../src/replication/guard.js';
import { withWriteRetries } from '../../src/replication/v2/write-retry.js';

describe('Coverage', () => {
  it('skips events at or below a heal snapshot inside its subtree, and nothing else', () => {
    const c = new Coverage();
    c.add('/p/a', 100);
    expect(c.skip('/p/a', 90, false)).toBe(true);
    expect(c.skip('/p/a/b', 100, false)).toBe(true);
    expect(c.skip('/p/a', 101, false)).toBe(false);
    expect(c.skip('/p/ab', 90, false)).toBe(false);
    expect(c.skip('/p/b', 90, true)).toBe(false);
  });

  it('a delete above a covered subtree is applied and ends the coverage (later events replay forward)', () => {
    const c = new Coverage();
    c.add('/p/a/b', 100);
    expect(c.skip('/p/a', 95, true)).toBe(false);
    expect(c.size).toBe(0);
    expect(c.skip('/p/a/b', 97, false)).toBe(false);
  });

  it('a delete above a covered subtree after its snapshot does not touch the coverage', () => {
    const c = new Coverage();
    c.add('/p/a/b', 100);
    expect(c.skip('/p/a', 101, true)).toBe(false);
    expect(c.size).toBe(1);
  });

  it('is pruned once the writer moved past the snapshot', () => {
    const c = new Coverage();
    c.add('/p/a', 100);
    c.add('/p/b', 200);
    c.prune(150);
    expect(c.size).toBe(1);
    expect(c.skip('/p/a', 90, false)).toBe(false);
  });
});

describe('withWriteRetries', () => {
  const fast = { attempts: 4, baseMs: 1, capMs: 2 };

  it('retries a retryable failure and succeeds without surfacing it', async () => {
    let calls = 0;
    const retries: number[] = [];
    await withWriteRetries({ key: '/k', index: 7 }, async () => {
      if (++calls < 3) throw new TransportError('reset');
    }, { policy: fast, onRetry: (_e, a) => retries.push(a) });
    expect(calls).toBe(3);
    expect(retries).toEqual([1, 2]);
  });

  it('gives up after the attempts with one error naming the key and index, retryable like its cause', async () => {
    let calls = 0;
    const err = await withWriteRetries({ key: '/k', index: 7 }, async () => {
      calls++;
      throw new TransportError('reset');
    }, { policy: fast }).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect(err).toBeInstanceOf(DestinationWriteError);
    expect((err as Error).message).toMatch(/writing \/k \(source index 7\) to the destination failed after 4 attempts: reset/);
    expect((err as DestinationWriteError).key).toBe('/k');
  });

  it('does not retry what cannot succeed', async () => {
    let calls = 0;
    const err = await withWriteRetries({ key: '/k', index: null }, async () => {
      calls++;
      throw new UnauthorizedError(110, 'The request requires user authentication', 'Insufficient credentials', 0, 401);
    }, { policy: fast }).catch((e: unknown) => e);
    expect(calls).toBe(1);
    expect(err).toBeInstanceOf(DestinationWriteError);
    expect((err as Error).message).toMatch(/^writing \/k to the destination failed: /);
  });

  it('never swallows a non-etcd error either', async () => {
    const err = await withWriteRetries({ key: '/k', index: 1 }, async () => {
      throw new KeyNotFoundError(100, 'Key not found', '/k', 5, 404);
    }, { policy: fast }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DestinationWriteError);
  });
});

describe('judgeSnapshot', () => {
  const guard = { allowMassDelete: false, massDeleteRatio: 0.5 };

  it('refuses an empty snapshot facing a replica, and one much smaller than the replica', () => {
    expect(judgeSnapshot(9, 0, 3, guard)).toMatch(/source snapshot at index 9 is empty while the replica holds 3 keys/);
    expect(judgeSnapshot(9, 4, 10, guard)).toMatch(/holds 4 keys, less than 50% of the replica's 10: it looks truncated/);
  });

  it('lets a plausible snapshot through however much of the replica must go (a source that grew fivefold)', () => {
    expect(judgeSnapshot(9, 1_214, 235, guard)).toBeNull();
    expect(judgeSnapshot(9, 5, 10, guard)).toBeNull();
    expect(judgeSnapshot(9, 1, 9, guard)).toBeNull(); // a small replica: a few keys may come and go
  });

  it('an empty subtree below the root is no suspect, and --allow-mass-delete allows everything', () => {
    expect(judgeSnapshot(9, 0, 3, { ...guard, emptyIsSuspect: false })).toBeNull();
    expect(judgeSnapshot(9, 0, 3, { ...guard, allowMassDelete: true })).toBeNull();
    expect(judgeSnapshot(9, 0, 0, guard)).toBeNull();
  });
});

describe('OwnWrites', () => {
  it('an event is classifiable once every write begun before it arrived has answered', () => {
    const own = new OwnWrites();
    const a = own.begin();
    const b = own.begin();
    const stamp = own.issued; // an event arrives now
    expect(own.oldestOpen()).toBe(a);
    own.end(b, 11);
    expect(stamp < own.oldestOpen()).toBe(false);
    own.end(a); // failed: no index
    expect(stamp < own.oldestOpen()).toBe(true);
    expect(own.has(11)).toBe(true);
    expect(own.has(10)).toBe(false);
  });
});

describe('ForeignChanges', () => {
  it('judges an event only once every write begun before it has answered, and then by its index alone', () => {
    const own = new OwnWrites();
    const changes = new ForeignChanges<string>(own);
    const ours = own.begin();
    changes.note(20, '/a'); // arrives before our write answered: it may be ours
    expect(changes.take().foreign).toEqual([]);
    own.end(ours, 20);
    changes.note(21, '/b'); // someone else's, nothing open
    expect(changes.take()).toEqual({ foreign: ['/b'], overflow: false });
    changes.note(20, '/a'); // an answered write of ours is dropped on arrival
    expect(changes.take().foreign).toEqual([]);
  });

  it('reports a flood beyond its bound once, instead of keeping every event', () => {
    const own = new OwnWrites();
    const changes = new ForeignChanges<string>(own, 2);
    for (let i = 1; i <= 5; i++) changes.note(i, `/k${i}`);
    expect(changes.take()).toEqual({ foreign: ['/k1', '/k2'], overflow: true });
    expect(changes.take()).toEqual({ foreign: [], overflow: false });
  });
});

describe('topMost', () => {
  it('keeps only keys that are not below another kept key, with string-prefix lookalikes kept apart', () => {
    expect(topMost(['/a/b', '/a', '/a-b', '/a/b/c', '/ab', '/a-b/x', '/c/d'])).toEqual(['/a', '/a-b', '/ab', '/c/d']);
    expect(topMost(['/x', '/', '/y'])).toEqual(['/']);
  });

  it('handles many keys under many dirs', () => {
    const keys = Array.from({ length: 50_000 }, (_, i) => `/p/d${i % 500}/k${i}`);
    keys.push('/p/d7');
    const top = topMost(keys);
    expect(top).toContain('/p/d7');
    expect(top).not.toContain('/p/d7/k7');
    expect(top).toHaveLength(50_000 - 100 + 1);
  });
});

describe('withWriteRetries and silent links', () => {
  it('a write that got no answer (timeout) is reported at once, not retried', async () => {
    const { UnreachableError } = await import('../../src/etcd/errors.js');
    let calls = 0;
    const err = await withWriteRetries({ key: '/k', index: 3 }, async () => {
      calls++;
      throw new UnreachableError('no answer');
    }, { policy: { attempts: 4, baseMs: 1, capMs: 2 } }).catch((e: unknown) => e);
    expect(calls).toBe(1);
    expect(err).toBeInstanceOf(DestinationWriteError);
  });
});
