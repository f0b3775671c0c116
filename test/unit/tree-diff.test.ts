import { describe, expect, it } from 'vitest';
import { diffTrees, type NodeSummary } from '../helpers/tree.js';

const tree = (entries: Record<string, NodeSummary>): Map<string, NodeSummary> => new Map(Object.entries(entries));
const file = (value: string, expiration?: string): NodeSummary =>
  expiration ? { dir: false, value, ttl: true, expiration } : { dir: false, value, ttl: false };
const dir: NodeSummary = { dir: true, ttl: false };

describe('diffTrees', () => {
  it('reports nothing for equal trees, including empty ones', () => {
    expect(diffTrees(new Map(), new Map())).toEqual([]);
    const t = tree({ '': dir, '/a': file('1'), '/d': dir });
    expect(diffTrees(t, new Map(t))).toEqual([]);
  });

  it('reports missing and extra keys, sorted by key', () => {
    const a = tree({ '': dir, '/b': file('1'), '/empty': dir });
    const b = tree({ '': dir, '/a': file('x') });
    expect(diffTrees(a, b)).toEqual([`extra: "/a" (value "x")`, `missing: "/b" (value "1")`, `missing: "/empty" (dir)`]);
  });

  it('names the prefix node itself', () => {
    expect(diffTrees(tree({ '': dir }), new Map())).toEqual([`missing: '' (prefix) (dir)`]);
  });

  it('reports value and dir/file differences', () => {
    const a = tree({ '/v': file('old'), '/k': dir });
    const b = tree({ '/v': file('new'), '/k': file('') });
    expect(diffTrees(a, b)).toEqual([`differs: "/k": dir vs file`, `differs: "/v": value "old" vs "new"`]);
  });

  it('treats an empty value and a key with spaces like any other', () => {
    const a = tree({ '/a b%c': file('') });
    expect(diffTrees(a, tree({ '/a b%c': file('') }))).toEqual([]);
    expect(diffTrees(a, tree({ '/a b%c': file(' ') }))).toEqual([`differs: "/a b%c": value "" vs " "`]);
  });

  it('compares TTL presence, and expirations within the tolerance', () => {
    const t0 = '2026-11-26T03:06:30.411013871Z';
    const t2 = '2026-11-26T03:06:32.411013871Z';
    const t5 = '2026-11-26T03:06:35.500000000Z';
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1') }))).toEqual([`differs: "/k": ttl vs no ttl`]);
    expect(diffTrees(tree({ '/k': file('1') }), tree({ '/k': file('1', t0) }))).toEqual([`differs: "/k": no ttl vs ttl`]);
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1', t2) }))).toEqual([]);
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1', t5) }))).toEqual([`differs: "/k": expiration ${t0} vs ${t5}`]);
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1', t5) }), { expirationToleranceMs: 6000 })).toEqual([]);
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1', t2) }), { expirationToleranceMs: 1000 })).toHaveLength(1);
  });

  it('lets a copy expire up to the copy margin later than the source, never earlier', () => {
    const t0 = '2026-11-26T03:06:30.000Z';
    const t5 = '2026-11-26T03:06:35.000Z';
    const opts = { expirationToleranceMs: 1000, copyMarginMs: 4000 };
    expect(diffTrees(tree({ '/k': file('1', t0) }), tree({ '/k': file('1', t5) }), opts)).toEqual([]);
    expect(diffTrees(tree({ '/k': file('1', t5) }), tree({ '/k': file('1', t0) }), opts)).toEqual([`differs: "/k": expiration ${t5} vs ${t0}`]);
  });

  it("treats TTL'd directories like TTL'd keys", () => {
    const d = (expiration: string): NodeSummary => ({ dir: true, ttl: true, expiration });
    expect(diffTrees(tree({ '/d': d('2026-01-01T00:00:00Z') }), tree({ '/d': dir }))).toEqual([`differs: "/d": ttl vs no ttl`]);
    expect(diffTrees(tree({ '/d': d('2026-01-01T00:00:00Z') }), tree({ '/d': d('2026-01-01T00:00:01Z') }))).toEqual([]);
  });

  it('lists several reasons for one key and truncates long values', () => {
    const long = 'x'.repeat(100);
    const [line] = diffTrees(tree({ '/k': file(long, '2026-01-01T00:00:00Z') }), tree({ '/k': file('y') }));
    expect(line).toMatch(/^differs: "\/k": value "x{50,}\.\.\." vs "y"; ttl vs no ttl$/);
    expect(line!.length).toBeLessThan(120);
  });

  it('counts an unparsable expiration as a difference', () => {
    expect(diffTrees(tree({ '/k': file('1', 'garbage') }), tree({ '/k': file('1', 'garbage') }))).toHaveLength(1);
  });
});
