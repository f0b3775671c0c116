// Property tests for the v2 writer (writer.ts, ordering by order.ts): random item sequences, random concurrency, and completion order chosen by
// fast-check. Each step pushes the next item or settles 1–3 running ops, then lets the writer react and checks
// every invariant; at the end it checks the recorded start/finish trace for order violations.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { V2Writer } from '../../src/replication/v2/writer.js';
import { ControlledOps, controlledWriter, failedIndex, flush } from './helpers/controlled-ops.js';

const KEYS = ['/a', '/a/b', '/a/b/c', '/d', '/d/e'] as const;

type Spec = { kind: 'value'; key: string } | { kind: 'subtree'; key: string } | { kind: 'marker' };
interface Item {
  index: number;
  spec: Spec;
}

const specArb: fc.Arbitrary<Spec> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('value' as const), key: fc.constantFrom(...KEYS) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('subtree' as const), key: fc.constantFrom(...KEYS, '/') }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'marker' as const }) },
);

/** Items with strictly increasing indexes (gaps are normal: other prefixes consume indexes). */
const itemsArb = (maxLength: number): fc.Arbitrary<{ start: number; items: Item[] }> =>
  fc
    .record({
      start: fc.nat({ max: 1000 }),
      specs: fc.array(fc.tuple(specArb, fc.integer({ min: 1, max: 3 })), { maxLength }),
    })
    .map(({ start, specs }) => {
      let index = start;
      return { start, items: specs.map(([spec, gap]) => ({ index: (index += gap), spec })) };
    });

const isAncestorOrSelf = (a: string, b: string): boolean => a === '/' || a === b || b.startsWith(a + '/');

/** Must `later` wait for `earlier` to finish? (value ops: same key, an ancestor or a descendant; subtree ops: everything.) */
function mustFollow(earlier: Spec, later: Spec): boolean {
  if (earlier.kind === 'marker' || later.kind === 'marker') return false;
  if (earlier.kind === 'subtree' || later.kind === 'subtree') return true;
  return isAncestorOrSelf(earlier.key, later.key) || isAncestorOrSelf(later.key, earlier.key);
}

interface Driver {
  ops: ControlledOps;
  writer: V2Writer;
  pushed: Item[];
  /** onError calls, with the trace length at the moment the writer learnt of the failure. */
  errors: { err: unknown; index: number; at: number }[];
  reported: number[];
  observed: number[];
  /** The op whose run was rejected, once the test rejected it. */
  failedIndex: number | undefined;
}

/** Drives one scenario to the end; `failIndex` names the op whose run rejects (if any). */
async function drive(
  start: number,
  items: Item[],
  concurrency: number,
  choices: fc.Stream<number>,
  failIndex: number | undefined,
): Promise<Driver> {
  const ops = new ControlledOps();
  const d: Driver = {
    ops,
    writer: undefined as unknown as V2Writer,
    pushed: [],
    errors: [],
    reported: [],
    observed: [start],
    failedIndex: undefined,
  };
  d.writer = controlledWriter(ops, {
    start,
    concurrency,
    onError: (err) => d.errors.push({ err, index: failedIndex(err)!, at: ops.trace.length }),
    onCheckpoint: (index) => d.reported.push(index),
  }).writer;
  const roomWaiters: { below: number; resolved: boolean }[] = [];
  const next = (): number => choices.next().value as number;

  while (d.pushed.length < items.length || ops.pending.length > 0) {
    const c = next();
    const canPush = d.pushed.length < items.length;
    if (canPush && (ops.pending.length === 0 || c % 3 === 0)) {
      const item = items[d.pushed.length]!;
      d.pushed.push(item);
      d.writer.push(item.spec.kind === 'marker' ? { index: item.index } : { index: item.index, event: ops.op(item.index, item.spec.key, item.spec.kind === 'subtree') });
    } else {
      // Settle 1–3 running ops in the same tick, in an order chosen by fast-check.
      const n = 1 + (c % 3);
      for (let k = 0; k < n && ops.pending.length > 0; k++) {
        const run = ops.pending[next() % ops.pending.length]!;
        if (run.index === failIndex && d.failedIndex === undefined) {
          d.failedIndex = run.index;
          run.settle({ error: new Error(`write ${run.index} failed`) });
        } else {
          run.settle();
        }
      }
    }
    if (c % 7 === 0) {
      const waiter = { below: 1 + (next() % (d.writer.size + 2)), resolved: false };
      roomWaiters.push(waiter);
      void d.writer.waitForRoom(waiter.below).then(() => (waiter.resolved = true));
    }
    await flush();
    checkStep(d, concurrency, roomWaiters);
  }
  return d;
}

/** Invariants that hold whenever the writer has reacted to everything. */
function checkStep(d: Driver, concurrency: number, roomWaiters: { below: number; resolved: boolean }[]): void {
  const { ops, writer, pushed } = d;
  const finished = new Set(ops.trace.filter((t) => t.type === 'finish').map((t) => t.index));
  const isDone = (item: Item) => item.spec.kind === 'marker' || finished.has(item.index);

  // (b) never more than `concurrency` running, and the writer's count agrees with what actually runs.
  expect(ops.running).toBeLessThanOrEqual(concurrency);
  expect(writer.inFlight).toBe(ops.running);

  // (c) checkpoint = highest index with everything up to it finished; monotonic.
  let expected = d.observed[0]!;
  for (const item of pushed) {
    if (!isDone(item)) break;
    expected = item.index;
  }
  expect(writer.checkpoint).toBe(expected);
  expect(writer.checkpoint).toBeGreaterThanOrEqual(d.observed[d.observed.length - 1]!);
  d.observed.push(writer.checkpoint);

  // (e) the checkpoint never reaches a failed item.
  if (d.failedIndex !== undefined) expect(writer.checkpoint).toBeLessThan(d.failedIndex);

  // Work-conserving: with a free slot and no failure, nothing startable is left waiting.
  if (!writer.failed && ops.running < concurrency) {
    for (let j = 0; j < pushed.length; j++) {
      const later = pushed[j]!;
      if (later.spec.kind === 'marker' || ops.started(later.index)) continue;
      const blocked = pushed.slice(0, j).some((earlier) => !isDone(earlier) && mustFollow(earlier.spec, later.spec));
      expect(blocked, `item ${later.index} (${JSON.stringify(later.spec)}) could start but waits`).toBe(true);
    }
  }

  // (f) waitForRoom(n) has resolved once fewer than n items are unretired (or the writer failed).
  for (const w of roomWaiters) if (writer.size < w.below || writer.failed) expect(w.resolved).toBe(true);
}

/** (a) in the trace, every op started only after every earlier op it must follow had finished. */
function checkOrder(d: Driver): void {
  const at = new Map<string, number>();
  for (const t of d.ops.trace) at.set(`${t.type}${t.index}`, t.at);
  const opItems = d.pushed.filter((i) => i.spec.kind !== 'marker');
  for (let j = 0; j < opItems.length; j++) {
    const later = opItems[j]!;
    const startedAt = at.get(`start${later.index}`);
    if (startedAt === undefined) continue;
    for (let i = 0; i < j; i++) {
      const earlier = opItems[i]!;
      if (!mustFollow(earlier.spec, later.spec)) continue;
      const finishedAt = at.get(`finish${earlier.index}`);
      expect(
        finishedAt !== undefined && finishedAt < startedAt,
        `${JSON.stringify(later)} started before ${JSON.stringify(earlier)} finished`,
      ).toBe(true);
    }
  }
}

describe('V2Writer properties', () => {
  it('keeps related ops in index order, bounds concurrency, and tracks the checkpoint exactly', async () => {
    await fc.assert(
      fc.asyncProperty(itemsArb(40), fc.integer({ min: 1, max: 8 }), fc.infiniteStream(fc.nat()), async ({ start, items }, concurrency, choices) => {
        const d = await drive(start, items, concurrency, choices, undefined);

        // (a)
        checkOrder(d);
        // (b)
        expect(d.ops.maxRunning).toBeLessThanOrEqual(concurrency);
        // (c) reported checkpoints strictly increase
        for (let i = 1; i < d.reported.length; i++) expect(d.reported[i]!).toBeGreaterThan(d.reported[i - 1]!);
        // (d) everything ran exactly once and finished; the writer is empty and idle
        for (const item of items) if (item.spec.kind !== 'marker') expect(d.ops.startCount.get(item.index)).toBe(1);
        expect(d.ops.trace.filter((t) => t.type === 'finish')).toHaveLength(d.ops.startCount.size);
        expect(d.writer.size).toBe(0);
        expect(d.writer.checkpoint).toBe(items.length > 0 ? items[items.length - 1]!.index : start);
        expect(d.errors).toEqual([]);
        let idle = false;
        void d.writer.idle().then(() => (idle = true));
        await flush();
        expect(idle).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('on a failing run: onError once, nothing starts afterwards, checkpoint stays below it, idle resolves', async () => {
    const scenario = itemsArb(30).filter(({ items }) => items.some((i) => i.spec.kind !== 'marker'));
    await fc.assert(
      fc.asyncProperty(scenario, fc.integer({ min: 1, max: 8 }), fc.nat(), fc.infiniteStream(fc.nat()), async ({ start, items }, concurrency, pick, choices) => {
        const opItems = items.filter((i) => i.spec.kind !== 'marker');
        const failIndex = opItems[pick % opItems.length]!.index;

        const d = await drive(start, items, concurrency, choices, failIndex);

        checkOrder(d);
        // Only one op fails, and with a single failure the writer always reaches it.
        expect(d.failedIndex).toBe(failIndex);
        expect(d.errors).toHaveLength(1);
        expect(d.errors[0]!.index).toBe(failIndex);
        expect(d.ops.trace.slice(d.errors[0]!.at).filter((t) => t.type === 'start')).toEqual([]);
        expect(d.writer.failed).toBe(true);
        expect(d.writer.checkpoint).toBeLessThan(failIndex);
        let idle = false;
        void d.writer.idle().then(() => (idle = true));
        await flush();
        expect(idle).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
