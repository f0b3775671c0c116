import { describe, expect, it } from 'vitest';
import { opFootprint, planEvent, planNode, remainingTtl, type DstOp } from '../../src/replication/v2/apply.js';
import type { EtcdEvent, EtcdNode } from '../../src/etcd/v2/decode.js';
import { KeyMap } from '../../src/replication/keys.js';
import { fixtureEvent } from './helpers/fixtures.js';

/** SP /demo, DP /replica, no strip: /demo/x → /replica/demo/x. */
const map = new KeyMap('/demo', '/replica', false, undefined);
const T0 = Date.parse('2026-11-26T02:53:19.794Z');

const event = (action: string, node: Partial<EtcdNode> & { key: string }, prevNode?: EtcdNode): EtcdEvent => ({
  action,
  node: { modifiedIndex: 100, createdIndex: 100, ...node },
  ...(prevNode ? { prevNode } : {}),
});

describe('remainingTtl', () => {
  const exp = '2026-11-26T02:53:22.801155925Z';
  const expMs = Date.parse(exp);

  it.each([
    [expMs - 3_007, 4],
    [expMs - 3_000, 3],
    [expMs - 2_001, 3],
    [expMs - 1, 1],
    [expMs, 0],
  ])('at %i ms → %i s (whole seconds, rounded up)', (now, expected) => {
    expect(remainingTtl(exp, now)).toBe(expected);
  });

  it('is <= 0 once the expiration has passed', () => {
    expect(remainingTtl(exp, expMs + 1)).toBeLessThanOrEqual(0);
    expect(remainingTtl(exp, expMs + 10_000)).toBeLessThanOrEqual(0);
  });

  it('reads nanosecond RFC 3339 timestamps (as etcd sends them)', () => {
    expect(remainingTtl('2026-11-26T02:53:59.18550858Z', Date.parse('2026-11-26T02:53:29.186Z'))).toBe(30);
  });
});

describe('planEvent: value writes → put', () => {
  it.each([
    ['set', 'set.json', '/replica/demo/a', '1'],
    ['set over an old value', 'set-overwrite.json', '/replica/demo/a', '2'],
    ['create', 'create.json', '/replica/demo/b', 'b1'],
    ['update', 'update.json', '/replica/demo/b', 'b3'],
    ['compareAndSwap', 'compare-and-swap.json', '/replica/demo/a', '3'],
  ])('%s → put with the value and no ttl', (_what, file, key, value) => {
    const op = planEvent(fixtureEvent(file.replace('.json', '')), map, T0, 'mirrored');

    expect(op).toStrictEqual({ kind: 'put', key, value });
  });

  it('keeps a POST-created key verbatim (never replays POST)', () => {
    const op = planEvent(fixtureEvent('post-create'), map, T0, 'mirrored');

    expect(op).toStrictEqual({ kind: 'put', key: '/replica/demo/queue/00000000000000000024', value: 'job1' });
  });

  it('writes an empty value as "" and a missing value as ""', () => {
    expect(planEvent(event('set', { key: '/demo/empty', value: '' }), map, T0, 'mirrored')).toStrictEqual({
      kind: 'put',
      key: '/replica/demo/empty',
      value: '',
    });
    expect(planEvent(event('set', { key: '/demo/novalue' }), map, T0, 'mirrored')).toStrictEqual({
      kind: 'put',
      key: '/replica/demo/novalue',
      value: '',
    });
  });

  it('keeps values with newlines, quotes and unicode unchanged', () => {
    const value = 'line1\nline2 "q" é';
    expect(planEvent(event('set', { key: '/demo/sp ace', value }), map, T0, 'mirrored')).toStrictEqual({
      kind: 'put',
      key: '/replica/demo/sp ace',
      value,
    });
  });

  it('computes the TTL from expiration, rounded up', () => {
    // set-ttl.json: written at 02:53:19.794 with ttl=3, expiration 02:53:22.801155925
    const op = planEvent(fixtureEvent('set-ttl'), map, T0, 'mirrored');

    expect(op).toStrictEqual({ kind: 'put', key: '/replica/demo/t1', value: 'x', ttl: 4 });
  });

  it('ignores the stale ttl field of an event read from history', () => {
    // The event says ttl 30, but it is replayed 4 s after it was written: 26 s remain.
    const ev = fixtureEvent('set-ttl-from-history');
    const fourSecondsLater = Date.parse('2026-11-26T03:01:55.448Z') - 26_000 + 500;
    const mapAll = new KeyMap('/', '/replica', false, undefined);

    const op = planEvent(ev, mapAll, fourSecondsLater, 'mirrored');

    expect(op).toStrictEqual({ kind: 'put', key: '/replica/ttlhist/k', value: '1', ttl: 26 });
  });

  it('turns a set whose expiration already passed into a delete that keeps the parent the set made', () => {
    const afterExpiry = Date.parse('2026-11-26T02:53:22.801155925Z') + 1;

    expect(planEvent(fixtureEvent('set-ttl'), map, afterExpiry, 'mirrored')).toStrictEqual({ kind: 'lapsed', key: '/replica/demo/t1', parent: '/replica/demo' });
  });

  it('turns a ttl=0 set (expiration = now) into a lapsed write', () => {
    const exp = '2026-11-26T02:56:36.863446133Z';
    const ev = event('set', { key: '/demo/ttl0', value: '1', expiration: exp });

    expect(planEvent(ev, map, Date.parse(exp), 'mirrored')).toStrictEqual({ kind: 'lapsed', key: '/replica/demo/ttl0', parent: '/replica/demo' });
  });

  it('a lapsed write deep below the prefix keeps its parent; one on the prefix itself, or below "/", has none to keep', () => {
    const past = '2026-11-26T02:53:00Z';
    expect(planEvent(event('set', { key: '/demo/d e/x/k', value: '1', expiration: past }), map, T0, 'mirrored')).toStrictEqual({
      kind: 'lapsed',
      key: '/replica/demo/d e/x/k',
      parent: '/replica/demo/d e/x',
    });
    const strip = new KeyMap('/demo', '/replica', true, undefined);
    expect(planEvent(event('set', { key: '/demo', dir: true, expiration: past }), strip, T0, 'mirrored')).toStrictEqual({ kind: 'lapsed', key: '/replica', parent: null });
    const all = new KeyMap('/', '/', true, undefined);
    expect(planEvent(event('set', { key: '/k', value: '1', expiration: past }), all, T0, 'mirrored')).toStrictEqual({ kind: 'lapsed', key: '/k', parent: null });
  });
});

describe('planEvent: removals → delete', () => {
  it.each([
    ['delete', 'delete', '/replica/demo/b'],
    ['compareAndDelete', 'compare-and-delete', '/replica/demo/c'],
    ['expire', 'expire', '/replica/demo/t1'],
    ['recursive dir delete', 'delete-dir-recursive', '/replica/demo/dir1'],
  ])('%s → delete', (_what, file, key) => {
    expect(planEvent(fixtureEvent(file), map, T0, 'mirrored')).toStrictEqual({ kind: 'delete', key });
  });

  it('an expired dir → delete of the subtree', () => {
    const tdir = new KeyMap('/tdir', '/replica', true, undefined);
    expect(planEvent(fixtureEvent('expire-dir'), tdir, T0, 'mirrored')).toStrictEqual({ kind: 'delete', key: '/replica/d1' });
  });

  it.each(['delete', 'expire', 'compareAndDelete'])('%s of the prefix itself → clearRoot', (action) => {
    const ev = event(action, { key: '/demo', dir: true });
    expect(planEvent(ev, map, T0, 'mirrored')).toStrictEqual({ kind: 'clearRoot' });
  });

  it('delete of the prefix itself with --strip → clearRoot', () => {
    const strip = new KeyMap('/demo', '/replica', true, undefined);
    expect(planEvent(event('delete', { key: '/demo', dir: true }), strip, T0, 'mirrored')).toStrictEqual({ kind: 'clearRoot' });
  });

  it('ancestor scope → clearRoot, whatever the event', () => {
    const anc = event('delete', { key: '/', dir: true });
    expect(planEvent(anc, map, T0, 'ancestor')).toStrictEqual({ kind: 'clearRoot' });
    expect(planEvent(event('expire', { key: '/a', dir: true }), new KeyMap('/a/b', '/r', true, undefined), T0, 'ancestor')).toStrictEqual({
      kind: 'clearRoot',
    });
  });
});

describe('planEvent: directories', () => {
  it('dir set → mkdir with ttl null', () => {
    expect(planEvent(fixtureEvent('mkdir'), map, T0, 'mirrored')).toStrictEqual({ kind: 'mkdir', key: '/replica/demo/dir1', ttl: null });
  });

  it('dir set over a file → mkdir (etcd replaces the file by an empty dir)', () => {
    const ev = event('set', { key: '/demo/a', dir: true }, { key: '/demo/a', value: '5', modifiedIndex: 9, createdIndex: 5 });
    expect(planEvent(ev, map, T0, 'mirrored')).toStrictEqual({ kind: 'mkdir', key: '/replica/demo/a', ttl: null });
  });

  it('dir update with an expiration → mkdir with the remaining ttl', () => {
    const tdir = new KeyMap('/tdir', '/replica', false, undefined);
    const now = Date.parse('2026-11-26T02:55:42.599Z'); // 2.001 s before expiration (ms precision)

    expect(planEvent(fixtureEvent('dir-update-ttl'), tdir, now, 'mirrored')).toStrictEqual({ kind: 'mkdir', key: '/replica/tdir/d1', ttl: 3 });
  });

  it('dir update removing the TTL → mkdir with ttl null', () => {
    const ev = event('update', { key: '/demo/d2', dir: true });
    expect(planEvent(ev, map, T0, 'mirrored')).toStrictEqual({ kind: 'mkdir', key: '/replica/demo/d2', ttl: null });
  });

  it('dir with an expiration already passed → lapsed (gone, its parent kept)', () => {
    const ev = event('set', { key: '/demo/d', dir: true, expiration: '2026-11-26T02:53:00Z' });
    expect(planEvent(ev, map, T0, 'mirrored')).toStrictEqual({ kind: 'lapsed', key: '/replica/demo/d', parent: '/replica/demo' });
  });

  it('dir set of the prefix itself → mkdir of dstRoot', () => {
    expect(planEvent(event('set', { key: '/demo', dir: true }), map, T0, 'mirrored')).toStrictEqual({
      kind: 'mkdir',
      key: '/replica/demo',
      ttl: null,
    });
  });
});

describe('planEvent: unknown actions', () => {
  it.each(['get', 'refresh', 'watch', 'compareAndExpire', ''])('%j → null', (action) => {
    expect(planEvent(event(action, { key: '/demo/a', value: 'v' }), map, T0, 'mirrored')).toBeNull();
  });
});

describe('planNode (shared with reconcile)', () => {
  it('plans a put for a value node at the given destination key', () => {
    expect(planNode({ key: '/demo/a', value: 'v', modifiedIndex: 1, createdIndex: 1 }, '/elsewhere/a', T0)).toStrictEqual({
      kind: 'put',
      key: '/elsewhere/a',
      value: 'v',
    });
  });

  it('plans a put with ttl, an mkdir with ttl, and deletes for expired nodes', () => {
    const exp = new Date(T0 + 600_000).toISOString();
    const past = new Date(T0 - 1).toISOString();

    expect(planNode({ key: '/k', value: 'v', expiration: exp, ttl: 1, modifiedIndex: 1, createdIndex: 1 }, '/k', T0)).toStrictEqual({
      kind: 'put',
      key: '/k',
      value: 'v',
      ttl: 600,
    });
    expect(planNode({ key: '/d', dir: true, expiration: exp, modifiedIndex: 1, createdIndex: 1 }, '/d', T0)).toStrictEqual({
      kind: 'mkdir',
      key: '/d',
      ttl: 600,
    });
    expect(planNode({ key: '/k', value: 'v', expiration: past, modifiedIndex: 1, createdIndex: 1 }, '/k', T0)).toStrictEqual({
      kind: 'delete',
      key: '/k',
    });
  });
});

describe('opFootprint', () => {
  it.each<[DstOp, { key: string; subtree: boolean }]>([
    [{ kind: 'put', key: '/replica/demo/a', value: 'v' }, { key: '/replica/demo/a', subtree: false }],
    [{ kind: 'put', key: '/replica/demo/a', value: 'v', ttl: 5 }, { key: '/replica/demo/a', subtree: false }],
    [{ kind: 'mkdir', key: '/replica/demo/d', ttl: null }, { key: '/replica/demo/d', subtree: true }],
    [{ kind: 'delete', key: '/replica/demo/a' }, { key: '/replica/demo/a', subtree: true }],
    [{ kind: 'clearRoot' }, { key: '/replica/demo', subtree: true }],
    [{ kind: 'lapsed', key: '/replica/demo/d/a', parent: '/replica/demo/d' }, { key: '/replica/demo/d', subtree: true }],
    [{ kind: 'lapsed', key: '/replica/demo', parent: null }, { key: '/replica/demo', subtree: true }],
  ])('%j → %j', (op, expected) => {
    expect(opFootprint(op, map)).toEqual(expected);
  });

  it('clearRoot with --strip and dst "/" covers "/"', () => {
    expect(opFootprint({ kind: 'clearRoot' }, new KeyMap('/demo', '/', true, undefined))).toEqual({ key: '/', subtree: true });
  });
});
