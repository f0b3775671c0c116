// The pure order of v2 destination writes (v2/order.ts): which write may start, and the checkpoint. The writer's
// own tests (writer.test.ts, writer.property.test.ts) drive it through real promises; these ask it directly.
import { describe, expect, it } from 'vitest';
import { WriteOrder, type OrderOptions } from '../../src/replication/v2/order.js';

function order(opts: Partial<OrderOptions> = {}, start = 0) {
  return new WriteOrder<string>(start, { concurrency: 8, ...opts });
}

const names = (o: WriteOrder<string>) => o.next().map((s) => s.work);

describe('WriteOrder', () => {
  it('per key: unrelated keys start together; a later write on the same key or below waits; the pass is counted as reordering', () => {
    const o = order();
    o.add(1, { key: '/a', subtree: false }, 'a1');
    o.add(2, { key: '/b', subtree: false }, 'b2');
    o.add(3, { key: '/a/x', subtree: false }, 'ax3');
    const started = o.next();
    expect(started.map((s) => [s.work, s.reordered, s.onLane])).toEqual([
      ['a1', false, false],
      ['b2', true, false],
    ]);
    expect(o.next()).toEqual([]);
    o.done(started[0]!.seq);
    expect(names(o)).toEqual(['ax3']);
    expect(o.checkpoint).toBe(1);
  });

  it('a subtree write starts when everything before it is done, and everything after it waits', () => {
    const o = order();
    o.add(1, { key: '/a', subtree: false }, 'a1');
    o.add(2, { key: '/', subtree: true }, 'root2');
    o.add(3, { key: '/z', subtree: false }, 'z3');
    const [a1] = o.next();
    expect(a1!.work).toBe('a1');
    o.done(a1!.seq);
    const [root] = o.next();
    expect(root!.work).toBe('root2');
    expect(o.next()).toEqual([]);
    o.done(root!.seq);
    expect(names(o)).toEqual(['z3']);
  });

  it('strict: one at a time in push order; pipelined writes queue behind each other up to the depth, on the lane, not counted as reordering', () => {
    const o = order({ ordering: 'strict', pipelineDepth: 2 });
    o.add(1, { key: '/a', subtree: false, pipelined: true }, 'a1');
    o.add(2, { key: '/b', subtree: false, pipelined: true }, 'b2');
    o.add(3, { key: '/c', subtree: false, pipelined: true }, 'c3');
    o.add(4, { key: '/d', subtree: false }, 'd4');
    const started = o.next();
    expect(started.map((s) => [s.work, s.onLane, s.reordered])).toEqual([
      ['a1', true, false],
      ['b2', true, false],
    ]);
    o.done(started[0]!.seq);
    const [c3] = o.next();
    expect(c3!.work).toBe('c3');
    o.done(started[1]!.seq);
    expect(o.next()).toEqual([]); // a plain write waits until the lane is empty
    o.done(c3!.seq);
    const [d4] = o.next();
    expect([d4!.work, d4!.onLane]).toEqual(['d4', false]);
  });

  it('switching the ordering applies to writes not started yet', () => {
    const o = order();
    o.add(1, { key: '/a', subtree: false }, 'a1');
    const [a1] = o.next();
    o.ordering = 'strict';
    o.add(2, { key: '/b', subtree: false }, 'b2');
    expect(o.next()).toEqual([]);
    o.done(a1!.seq);
    expect(names(o)).toEqual(['b2']);
  });

  it('keeps the checkpoint contiguous: markers and finished writes retire only behind everything before them', () => {
    const o = order({}, 10);
    o.add(11, { key: '/a', subtree: false }, 'a');
    o.add(12);
    o.add(13, { key: '/b', subtree: false }, 'b');
    const [a, b] = o.next();
    o.done(b!.seq);
    expect(o.checkpoint).toBe(10);
    expect(o.size).toBe(3);
    o.done(a!.seq);
    expect(o.checkpoint).toBe(13);
    expect(o.size).toBe(0);
    o.add(14);
    expect(o.checkpoint).toBe(14);
    expect(o.lastIndex).toBe(14);
  });

  it('a failure is reported once; nothing starts afterwards and the checkpoint stays below it', () => {
    const o = order();
    o.add(1, { key: '/a', subtree: false }, 'a');
    o.add(2, { key: '/b', subtree: false }, 'b');
    o.add(3, { key: '/a', subtree: false }, 'a3');
    const [a, b] = o.next();
    expect(o.fail(a!.seq)).toBe(true);
    expect(o.idle).toBe(false);
    expect(o.fail(b!.seq)).toBe(false);
    expect(o.next()).toEqual([]);
    expect(o.checkpoint).toBe(0);
    expect(o.failed).toBe(true);
    expect(o.idle).toBe(true);
  });

  it('bounds concurrency and the lookahead', () => {
    const o = order({ concurrency: 2, lookahead: 3 });
    o.add(1, { key: '/a', subtree: false }, 'a1');
    o.add(2, { key: '/a', subtree: false }, 'a2');
    o.add(3, { key: '/a', subtree: false }, 'a3');
    o.add(4, { key: '/b', subtree: false }, 'b4');
    expect(names(o)).toEqual(['a1']); // b4 is beyond the lookahead
    o.add(5, { key: '/c', subtree: false }, 'c5');
    expect(o.inFlight).toBe(1);
    const o2 = order({ concurrency: 2 });
    for (const k of ['x', 'y', 'z']) o2.add(o2.lastIndex + 1, { key: `/${k}`, subtree: false }, k);
    expect(names(o2)).toEqual(['x', 'y']);
  });
});
