// The v2 writer (writer.ts) on a destination whose requests the test settles: the order it keeps (order.ts), the
// checkpoint, failures, backpressure and the ordered lane.
import { describe, expect, it, vi } from 'vitest';
import { DestinationWriteError } from '../../src/etcd/errors.js';
import { ControlledOps, controlledWriter, flush, type WriterSetup } from './helpers/controlled-ops.js';

function setup(opts: WriterSetup = {}) {
  const ops = new ControlledOps();
  const onError = vi.fn();
  const checkpoints: number[] = [];
  const { writer, metrics } = controlledWriter(ops, { onError, onCheckpoint: (i) => checkpoints.push(i), ...opts });
  return { ops, writer, onError, checkpoints, metrics };
}

describe('V2Writer: concurrency across unrelated keys', () => {
  it('runs value ops on unrelated keys at the same time', () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/d') });
    writer.push({ index: 3, event: ops.op(3, '/f/g') });

    expect(ops.runningIndexes()).toEqual([1, 2, 3]);
    expect(writer.inFlight).toBe(3);
  });

  it('treats sibling keys and string-prefix lookalikes as unrelated', () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a/b') });
    writer.push({ index: 2, event: ops.op(2, '/a/c') });
    writer.push({ index: 3, event: ops.op(3, '/ab') });
    writer.push({ index: 4, event: ops.op(4, '/a/bc') });

    expect(ops.runningIndexes()).toEqual([1, 2, 3, 4]);
  });

  it('never runs more than `concurrency` ops; the next starts when one finishes', async () => {
    const { ops, writer } = setup({ concurrency: 2 });

    for (let i = 1; i <= 5; i++) writer.push({ index: i, event: ops.op(i, `/k${i}`) });
    expect(ops.runningIndexes()).toEqual([1, 2]);

    ops.run(2).settle();
    await flush();

    expect(ops.runningIndexes()).toEqual([1, 3]);
    expect(ops.maxRunning).toBe(2);
  });

  it('with concurrency 1 runs everything strictly in push order', async () => {
    const { ops, writer } = setup({ concurrency: 1 });
    for (let i = 1; i <= 4; i++) writer.push({ index: i, event: ops.op(i, `/k${i}`) });

    for (let i = 1; i <= 4; i++) {
      expect(ops.runningIndexes()).toEqual([i]);
      ops.run(i).settle();
      await flush();
    }

    expect(ops.trace.filter((t) => t.type === 'start').map((t) => t.index)).toEqual([1, 2, 3, 4]);
  });

  it('lets a later unrelated op pass a blocked one', async () => {
    const { ops, writer } = setup({ concurrency: 4 });

    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/a') });
    writer.push({ index: 3, event: ops.op(3, '/d') });

    expect(ops.runningIndexes()).toEqual([1, 3]);
  });
});

describe('V2Writer: per-key order', () => {
  it('starts a value op on the same key only after the earlier one finished', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/a') });
    expect(ops.runningIndexes()).toEqual([1]);

    ops.run(1).settle();
    await flush();

    expect(ops.runningIndexes()).toEqual([2]);
  });

  it('starts a value op below a key only after the earlier op on that ancestor finished', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/a/b/c') });
    expect(ops.started(2)).toBe(false);

    ops.run(1).settle();
    await flush();

    expect(ops.started(2)).toBe(true);
  });

  it('keeps a chain on one key in index order however the runs are scheduled', async () => {
    const { ops, writer } = setup();
    for (let i = 1; i <= 5; i++) writer.push({ index: i, event: ops.op(i, '/same') });

    while (ops.pending.length > 0) {
      expect(ops.pending).toHaveLength(1);
      ops.pending[0]!.settle();
      await flush();
    }

    expect(ops.trace.map((t) => `${t.type}${t.index}`)).toEqual([
      'start1', 'finish1', 'start2', 'finish2', 'start3', 'finish3', 'start4', 'finish4', 'start5', 'finish5',
    ]);
  });
});

describe('V2Writer: subtree ops are barriers', () => {
  it('starts a subtree op only when everything before it finished, even on unrelated keys', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/x') });
    writer.push({ index: 2, event: ops.op(2, '/a', true) });
    expect(ops.started(2)).toBe(false);

    ops.run(1).settle();
    await flush();

    expect(ops.started(2)).toBe(true);
  });

  it('holds back everything after a subtree op until it finished, even unrelated keys', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a', true) });
    writer.push({ index: 2, event: ops.op(2, '/zzz') });
    writer.push({ index: 3, event: ops.op(3, '/a/b') });
    expect(ops.runningIndexes()).toEqual([1]);

    ops.run(1).settle();
    await flush();

    expect(ops.runningIndexes()).toEqual([2, 3]);
  });

  it('runs two consecutive subtree ops one after the other', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/a', true) });
    writer.push({ index: 2, event: ops.op(2, '/d', true) });
    expect(ops.runningIndexes()).toEqual([1]);

    ops.run(1).settle();
    await flush();

    expect(ops.runningIndexes()).toEqual([2]);
  });

  it('lets a barrier start past markers that are already done', async () => {
    const { ops, writer } = setup();

    writer.push({ index: 1, event: ops.op(1, '/x') });
    writer.push({ index: 2 });
    writer.push({ index: 3 });
    writer.push({ index: 4, event: ops.op(4, '/a', true) });

    ops.run(1).settle();
    await flush();

    expect(ops.started(4)).toBe(true);
    expect(writer.checkpoint).toBe(3);
  });
});

describe('V2Writer: checkpoint', () => {
  it('starts at the given index', () => {
    expect(setup({ start: 2007 }).writer.checkpoint).toBe(2007);
  });

  it('advances at once for markers pushed while nothing is pending', () => {
    const { writer, checkpoints } = setup({ start: 10 });

    writer.push({ index: 12 });
    writer.push({ index: 20 });

    expect(writer.checkpoint).toBe(20);
    expect(checkpoints).toEqual([12, 20]);
    expect(writer.size).toBe(0);
  });

  it('is the highest index below which everything finished, whatever the completion order', async () => {
    const { ops, writer, checkpoints } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    writer.push({ index: 5 });
    writer.push({ index: 7, event: ops.op(7, '/c') });

    ops.run(7).settle();
    await flush();
    expect(writer.checkpoint).toBe(0);

    ops.run(2).settle();
    await flush();
    expect(writer.checkpoint).toBe(0);

    ops.run(1).settle();
    await flush();
    expect(writer.checkpoint).toBe(7);
    expect(checkpoints).toEqual([7]);
  });

  it('does not let a marker pass an unfinished op', async () => {
    const { ops, writer } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2 });
    expect(writer.checkpoint).toBe(0);

    ops.run(1).settle();
    await flush();

    expect(writer.checkpoint).toBe(2);
  });

  it('reports each advance once, in increasing order', async () => {
    const { ops, writer, checkpoints } = setup();
    writer.push({ index: 3, event: ops.op(3, '/a') });
    writer.push({ index: 4, event: ops.op(4, '/b') });
    writer.push({ index: 9, event: ops.op(9, '/c') });

    ops.run(3).settle();
    await flush();
    ops.run(9).settle();
    await flush();
    ops.run(4).settle();
    await flush();

    expect(checkpoints).toEqual([3, 9]);
  });

  it('stays correct after the internal queue is compacted (thousands of items)', async () => {
    const { ops, writer } = setup({ concurrency: 4 });
    writer.push({ index: 1, event: ops.op(1, '/slow') });
    for (let i = 2; i <= 6000; i++) writer.push({ index: i });
    expect(writer.checkpoint).toBe(0);
    expect(writer.size).toBe(6000);

    ops.run(1).settle();
    await flush();
    expect(writer.checkpoint).toBe(6000);

    for (let i = 6001; i <= 12_000; i++) writer.push(i % 3 === 0 ? { index: i, event: ops.op(i, `/k${i % 7}`) } : { index: i });
    while (ops.pending.length > 0) {
      ops.pending[0]!.settle();
      await flush();
    }

    expect(writer.checkpoint).toBe(12_000);
    expect(writer.size).toBe(0);
    await writer.idle();
  });
});

describe('V2Writer: push validation', () => {
  it.each([
    ['equal to the last pushed', 15],
    ['below the last pushed', 13],
    ['equal to the start index', 10],
    ['below the start index', 9],
  ])('throws for an index %s (%i after start 10 and a push of 15)', (_what, bad) => {
    const { ops, writer } = setup({ start: 10 });
    writer.push({ index: 15, event: ops.op(15, '/a') });

    expect(() => writer.push({ index: bad })).toThrow(/pushed after/);
  });

  it('throws for an index not above the start index when nothing was pushed', () => {
    const { writer } = setup({ start: 10 });
    expect(() => writer.push({ index: 10 })).toThrow(/pushed after/);
  });

  it('checks against the checkpoint once everything retired', () => {
    const { writer } = setup();
    writer.push({ index: 5 });
    expect(() => writer.push({ index: 5 })).toThrow();
    expect(() => writer.push({ index: 6 })).not.toThrow();
  });
});

describe('V2Writer: failures', () => {
  it('calls onError once with the failed index, halts, and never moves the checkpoint past it', async () => {
    const { ops, writer, onError } = setup({ concurrency: 4 });
    const boom = new Error('destination refused');
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    writer.push({ index: 3, event: ops.op(3, '/c') });
    writer.push({ index: 4, event: ops.op(4, '/b') }); // waits for 2

    ops.run(2).settle({ error: boom });
    await flush();

    expect(onError).toHaveBeenCalledTimes(1);
    const err = onError.mock.calls[0]![0] as DestinationWriteError;
    expect(err).toBeInstanceOf(DestinationWriteError);
    expect(err.cause).toBe(boom);
    expect(err.message).toContain('source index 2');
    expect(writer.failed).toBe(true);

    ops.run(1).settle();
    ops.run(3).settle({ error: new Error('second failure') });
    await flush();

    expect(onError).toHaveBeenCalledTimes(1);
    expect(ops.started(4)).toBe(false);
    expect(writer.checkpoint).toBe(1);
  });

  it('starts nothing pushed after the failure, and markers do not move the checkpoint past it', async () => {
    const { ops, writer } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    ops.run(1).settle({ error: new Error('x') });
    await flush();

    writer.push({ index: 2, event: ops.op(2, '/unrelated') });
    writer.push({ index: 3 });

    expect(ops.started(2)).toBe(false);
    expect(writer.checkpoint).toBe(0);
  });

  it('resolves idle() once the ops still running finished', async () => {
    const { ops, writer } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    writer.push({ index: 3, event: ops.op(3, '/a') });
    ops.run(1).settle({ error: new Error('x') });
    await flush();
    let idle = false;
    void writer.idle().then(() => (idle = true));
    await flush();
    expect(idle).toBe(false);

    ops.run(2).settle();
    await flush();

    expect(idle).toBe(true);
  });

  it('turns a rejection with undefined into an error for onError', async () => {
    const { ops, writer, onError } = setup();
    writer.pushKeyed('/a', ops.closure(1, '/a'));

    ops.run(1).settle({ error: undefined });
    await flush();

    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0]![0]).toBeInstanceOf(Error);
    expect(writer.checkpoint).toBe(0);
  });

  it('halt() stops starting new work while running ops finish', async () => {
    const { ops, writer } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/a') });

    writer.halt();
    ops.run(1).settle();
    await flush();

    expect(ops.started(2)).toBe(false);
    expect(writer.checkpoint).toBe(1);
    await writer.idle();
  });
});

describe('V2Writer: idle and waitForRoom', () => {
  it('idle() resolves at once when nothing was pushed or everything finished', async () => {
    const { writer } = setup();
    await writer.idle();
    writer.push({ index: 1 });
    await writer.idle();
  });

  it('idle() waits for waiting and running ops', async () => {
    const { ops, writer } = setup({ concurrency: 1 });
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    let idle = false;
    void writer.idle().then(() => (idle = true));

    ops.run(1).settle();
    await flush();
    expect(idle).toBe(false);

    ops.run(2).settle();
    await flush();
    expect(idle).toBe(true);
  });

  it('waitForRoom(n) resolves at once below n, and otherwise when the size drops below n', async () => {
    const { ops, writer } = setup({ concurrency: 8 });
    await writer.waitForRoom(1);
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    writer.push({ index: 3, event: ops.op(3, '/c') });
    await writer.waitForRoom(4);
    let room = false;
    void writer.waitForRoom(2).then(() => (room = true));

    ops.run(2).settle(); // retires nothing: 1 is still pending
    await flush();
    expect(writer.size).toBe(3);
    expect(room).toBe(false);

    ops.run(1).settle(); // retires 1 and 2
    await flush();
    expect(writer.size).toBe(1);
    expect(room).toBe(true);
  });

  it('waitForRoom resolves when the writer fails, so the poller does not hang', async () => {
    const { ops, writer } = setup();
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    let room = false;
    void writer.waitForRoom(1).then(() => (room = true));

    ops.run(1).settle({ error: new Error('x') });
    await flush();

    expect(room).toBe(true);
  });
});

describe('V2Writer: strict ordering', () => {
  it('runs one op at a time in push order, even on unrelated keys, and counts no reordering', async () => {
    const { ops, writer, metrics } = setup({ ordering: 'strict' });
    for (let i = 1; i <= 4; i++) writer.push({ index: i, event: ops.op(i, `/k${i}`) });
    for (let i = 1; i <= 4; i++) {
      expect(ops.runningIndexes()).toEqual([i]);
      ops.run(i).settle();
      await flush();
    }
    expect(ops.maxRunning).toBe(1);
    expect(metrics.reordered).toBe(0);
    expect(writer.checkpoint).toBe(4);
  });

  it('markers between ops retire at once and never let a later op start early', async () => {
    const { ops, writer, checkpoints } = setup({ ordering: 'strict' });
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2 });
    writer.push({ index: 3, event: ops.op(3, '/b') });
    expect(ops.runningIndexes()).toEqual([1]);
    ops.run(1).settle();
    await flush();
    expect(checkpoints).toContain(2);
    expect(ops.runningIndexes()).toEqual([3]);
  });

  it('switching key → strict lets running ops finish and starts nothing until they have', async () => {
    const { ops, writer, metrics } = setup({ ordering: 'key' });
    writer.push({ index: 1, event: ops.op(1, '/a') });
    writer.push({ index: 2, event: ops.op(2, '/b') });
    expect(ops.runningIndexes()).toEqual([1, 2]);
    expect(metrics.reordered).toBe(1); // 2 started while 1 was not applied
    writer.setOrdering('strict');
    writer.push({ index: 3, event: ops.op(3, '/c') });
    expect(ops.runningIndexes()).toEqual([1, 2]);
    ops.run(2).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([1]);
    ops.run(1).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([3]);
    writer.setOrdering('key');
    writer.push({ index: 4, event: ops.op(4, '/d') });
    expect(ops.runningIndexes()).toEqual([3, 4]);
    expect(metrics.reordered).toBe(2);
  });

  it('pushKeyed orders after earlier ops on the same key, does not move the checkpoint, and blocks later ops on the key', async () => {
    const { ops, writer, checkpoints } = setup({ ordering: 'key' });
    writer.push({ index: 5, event: ops.op(5, '/a') });
    writer.pushKeyed('/a', ops.closure(100, '/a'));
    writer.push({ index: 6, event: ops.op(6, '/a') });
    writer.push({ index: 7, event: ops.op(7, '/b') });
    expect(ops.runningIndexes()).toEqual([5, 7]);
    ops.run(5).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([7, 100]);
    ops.run(100).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([7, 6]);
    ops.run(6).settle();
    ops.run(7).settle();
    await flush();
    expect(writer.checkpoint).toBe(7);
    expect(checkpoints.every((c, i) => i === 0 || c >= checkpoints[i - 1]!)).toBe(true);
  });
});

describe('V2Writer: strict ordering on the ordered lane', () => {
  it('starts pipelined ops in push order up to the depth; a plain op waits until the lane is empty', async () => {
    const { ops, writer } = setup({ ordering: 'strict', laneDepth: 3 });
    for (let i = 1; i <= 4; i++) writer.push({ index: i, event: ops.laneOp(i, `/k${i}`) });
    writer.push({ index: 5, event: ops.op(5, '/plain') });
    writer.push({ index: 6, event: ops.laneOp(6, '/k6') });
    expect(ops.runningIndexes()).toEqual([1, 2, 3]);
    expect(ops.pending.map((p) => p.onLane)).toEqual([true, true, true]);
    ops.run(1).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([2, 3, 4]);
    for (const i of [2, 3, 4]) ops.run(i).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([5]); // alone
    ops.run(5).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([6]);
  });

  it('after key → strict, lane ops wait until ops started off the lane have finished', async () => {
    const { ops, writer } = setup({ ordering: 'key', laneDepth: 4 });
    writer.push({ index: 1, event: ops.laneOp(1, '/a') });
    writer.push({ index: 2, event: ops.laneOp(2, '/b') });
    writer.setOrdering('strict');
    writer.push({ index: 3, event: ops.laneOp(3, '/c') });
    expect(ops.runningIndexes()).toEqual([1, 2]);
    ops.run(1).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([2]);
    ops.run(2).settle();
    await flush();
    expect(ops.runningIndexes()).toEqual([3]);
  });

  it('redoes a lane write that failed the ordinary way once the lane drained, unless the destination shows it; no lane write overtakes the redo', async () => {
    const { ops, writer } = setup({ ordering: 'strict', laneDepth: 3 });
    for (let i = 1; i <= 3; i++) writer.push({ index: i, event: ops.laneOp(i, `/k${i}`) });
    ops.run(1).settle({ error: new Error('connection reset') });
    await flush();
    expect(ops.runningIndexes()).toEqual([2, 3]); // no redo while the lane holds writes
    writer.push({ index: 4, event: ops.laneOp(4, '/k4') });
    ops.run(2).settle();
    ops.run(3).settle();
    await flush();
    // /k1 is not on the destination: redone off the lane; 4 waits behind the redo.
    expect(ops.pending.map((p) => [p.index, p.onLane])).toEqual([[1, false]]);
    expect(writer.checkpoint).toBe(0);
    ops.run(1).settle();
    await flush();
    expect(writer.checkpoint).toBe(3);
    expect(ops.pending.map((p) => [p.index, p.onLane])).toEqual([[4, true]]);
  });

  it('does not redo a failed lane write the destination shows applied, or overtaken by a later lane write to its key', async () => {
    const { ops, writer, onError } = setup({ ordering: 'strict', laneDepth: 3 });
    writer.push({ index: 1, event: ops.laneOp(1, '/a') });
    writer.push({ index: 2, event: ops.laneOp(2, '/a') });
    writer.push({ index: 3, event: ops.laneOp(3, '/b') });
    ops.copies.set('/a', 'v2');
    ops.copies.set('/b', 'v3');
    ops.run(1).settle({ error: new Error('connection reset') });
    ops.run(2).settle();
    ops.run(3).settle({ error: new Error('connection reset') });
    await flush();
    expect(ops.pending).toEqual([]);
    expect(ops.startCount.get(1)).toBe(1);
    expect(ops.startCount.get(3)).toBe(1);
    expect(writer.checkpoint).toBe(3);
    expect(onError).not.toHaveBeenCalled();
  });
});
