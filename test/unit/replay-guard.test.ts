import { describe, expect, it } from 'vitest';
import { alreadyApplied, keysToRead, ReplayHold, type ReplayItem } from '../../src/replication/v2/replay-guard.js';

const put = (index: number, key: string, value: string, before: string | null): ReplayItem => ({ index, key, kind: 'put', value, before });
const del = (index: number, key: string, before: string | null): ReplayItem => ({ index, key, kind: 'delete', before });

describe('replay guard', () => {
  it('skips, per key, the events whose outcome the destination already shows', () => {
    const items = [put(11, '/a', 'a1', 'a0'), put(12, '/b', 'b1', null), put(13, '/a', 'a2', 'a1'), { index: 14 }, put(15, '/a', 'a3', 'a2'), put(16, '/b', 'b2', 'b1')];
    // Before the crash the writer had applied up to 13.
    const dst = new Map<string, string | null>([['/a', 'a2'], ['/b', 'b1']]);
    expect([...alreadyApplied(items, dst)].sort()).toEqual([11, 12, 13]);
  });

  it('nothing applied yet: nothing skipped', () => {
    const items = [put(11, '/a', 'a1', 'a0'), del(12, '/b', 'b0')];
    expect(alreadyApplied(items, new Map([['/a', 'a0'], ['/b', 'b0']])).size).toBe(0);
  });

  it('a delete counts only when absence says something (the key existed right before the window)', () => {
    const existed = [del(11, '/a', 'a0'), put(12, '/a', 'a1', null)];
    expect([...alreadyApplied(existed, new Map([['/a', null]]))]).toEqual([11]);
    const created = [put(11, '/a', 'a1', null), del(12, '/a', 'a1')];
    expect(alreadyApplied(created, new Map([['/a', null]])).size).toBe(0); // absent before the window too: unknown
  });

  it('a value that repeats proves only its first occurrence', () => {
    const items = [put(11, '/a', 'v', 'x'), put(12, '/a', 'w', 'v'), put(13, '/a', 'v', 'w')];
    expect([...alreadyApplied(items, new Map([['/a', 'v']]))]).toEqual([11]);
    // The value it had before the window proves nothing.
    const back = [put(11, '/a', 'w', 'v'), put(12, '/a', 'v', 'w')];
    expect(alreadyApplied(back, new Map([['/a', 'v']])).size).toBe(0);
  });

  it('a key whose copy fits several points: the keys that fit one decide how far strict order got', () => {
    // /k deleted twice in the window: its absence fits after 12 and after 14. /n1 and /n2 (written once each) say
    // the run got past 15 but not to 16: /k's events all happened, replaying 13–14 would bring /k back for a moment.
    const items = [put(11, '/k', 'v1', 'v0'), del(12, '/k', 'v1'), put(13, '/k', 'v2', null), del(14, '/k', 'v2'), put(15, '/n1', 'a', null), put(16, '/n2', 'b', null)];
    const dst = new Map<string, string | null>([['/k', null], ['/n1', 'a'], ['/n2', null]]);
    expect([...alreadyApplied(items, dst)].sort()).toEqual([11, 12, 13, 14, 15]);
    // The run stopped between 12 and 13: the first point.
    const early = new Map<string, string | null>([['/k', null], ['/n1', null], ['/n2', null]]);
    expect([...alreadyApplied([put(11, '/k', 'v1', 'v0'), del(12, '/k', 'v1'), put(12.5, '/n1', 'a', null), put(13, '/k', 'v2', null), del(14, '/k', 'v2')], early)].sort()).toEqual([11, 12]);
  });

  it('keys that no single strict run explains (writes overlapped): a repeating key keeps its first point', () => {
    // /a says the run got past 20, /b says it stopped before 15: per-key order only. /k's absence fits 12 and 14.
    const items = [put(11, '/k', 'v1', 'v0'), del(12, '/k', 'v1'), put(13, '/k', 'v2', null), del(14, '/k', 'v2'), put(15, '/b', 'b1', null), put(20, '/a', 'a1', null)];
    const dst = new Map<string, string | null>([['/k', null], ['/a', 'a1'], ['/b', null]]);
    expect([...alreadyApplied(items, dst)].sort()).toEqual([11, 12, 20]);
  });

  it('keys the destination did not answer for (directories, failed reads) are replayed', () => {
    expect(alreadyApplied([put(11, '/a', 'a1', null)], new Map()).size).toBe(0);
  });

  it('a subtree operation in the window turns the guard off', () => {
    expect(keysToRead([put(11, '/a', 'a1', null), { index: 12, key: '/d', kind: 'subtree' }])).toBeNull();
    expect(keysToRead([put(11, '/a', 'a1', null), { index: 12 }, del(13, '/b', 'x'), put(14, '/a', 'a2', 'a1')])).toEqual(['/a', '/b']);
  });
});

describe('ReplayHold', () => {
  it('holds until the window up to the source index at the start is complete; what follows is held too until released', () => {
    const hold = new ReplayHold<{ index: number }>();
    expect(hold.hold({ index: 11 })).toBe(false); // the source index is not known yet
    expect(hold.live(13, 10)).toBe(false);
    expect(hold.live(20, 10)).toBe(false); // only the first counts
    expect(hold.upTo).toBe(13);
    expect(hold.hold({ index: 12 })).toBe(false);
    expect(hold.hold({ index: 13 })).toBe(true);
    expect(hold.begin()).toBe(true);
    expect(hold.begin()).toBe(false);
    hold.hold({ index: 14 });
    expect(hold.window().map((i) => i.index)).toEqual([11, 12, 13]);
    expect(hold.items.map((i) => i.index)).toEqual([11, 12, 13, 14]);
  });

  it('nothing to hold when the source is no further than the resume point', () => {
    expect(new ReplayHold().live(10, 10)).toBe(true);
  });
});
