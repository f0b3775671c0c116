// Random sequences of v2 operations on the source end in equal trees through the concurrent writer.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { raw, storeIndex } from '../helpers/raw.js';

let pair: Pair;
let mirror: MirrorProcess;
beforeAll(async () => {
  pair = await startPair();
  mirror = await spawnMirror(['--reload', '--write-concurrency', '8', '--src-prefix', '/prop', '--dst-prefix', '/prop', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
  await mirror.waitForState('tailing');
});
afterAll(async () => {
  await mirror?.kill('SIGTERM');
  await pair?.stop();
});

// A small tree so that operations collide: values, dirs, and values where dirs were (and the reverse).
const path = fc.constantFrom('/a', '/a/b', '/a/b/c', '/a/d', '/e', '/e/f', '/g');
const op = fc.oneof(
  fc.record({ kind: fc.constant('set'), path, value: fc.string({ maxLength: 6 }) }),
  fc.record({ kind: fc.constant('setTtl'), path, ttl: fc.integer({ min: 30, max: 300 }) }),
  fc.record({ kind: fc.constant('mkdir'), path }),
  fc.record({ kind: fc.constant('mkdirTtl'), path, ttl: fc.integer({ min: 30, max: 300 }) }),
  fc.record({ kind: fc.constant('delete'), path }),
  fc.record({ kind: fc.constant('rmdir'), path }),
  fc.record({ kind: fc.constant('update'), path, value: fc.string({ maxLength: 6 }) }),
  fc.record({ kind: fc.constant('post'), path }),
);
type Op = { kind: string; path: string; value?: string; ttl?: number };

async function apply(base: string, o: Op): Promise<void> {
  const S = pair.src.clientUrl;
  const key = base + o.path;
  // Source refusals (a value onto a dir, a missing key, ...) are part of the sequence, not failures.
  switch (o.kind) {
    case 'set':
      return void (await raw(S, 'PUT', key, { value: o.value ?? '' }));
    case 'setTtl':
      return void (await raw(S, 'PUT', key, { value: 'ttl', ttl: o.ttl! }));
    case 'mkdir':
      return void (await raw(S, 'PUT', key, { dir: true }));
    case 'mkdirTtl':
      return void (await raw(S, 'PUT', key, { dir: true, ttl: o.ttl!, prevExist: true }));
    case 'delete':
      return void (await raw(S, 'DELETE', key));
    case 'rmdir':
      return void (await raw(S, 'DELETE', key, { recursive: true }));
    case 'update':
      return void (await raw(S, 'PUT', key, { value: o.value ?? '', prevExist: true }));
    case 'post':
      return void (await raw(S, 'POST', key, { value: 'job' }));
  }
}

describe('random operation sequences', () => {
  it('end in equal trees', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), async (ops) => {
        const base = `/prop/r${run++}`;
        // Fire them without waiting one by one where possible: two at a time keeps the writer busy and
        // the source order well defined per pair.
        for (let i = 0; i < ops.length; i += 2) await Promise.all(ops.slice(i, i + 2).map((o) => apply(base, o)));
        await waitForIndex(pair.dstClient, '/__replication/prop', await storeIndex(pair.src.clientUrl));
        await expectTreesEqual(pair.srcClient, base, pair.dstClient, base, { timeoutMs: 5_000 });
      }),
      { numRuns: 25, seed: 20261126 },
    );
  });
});
