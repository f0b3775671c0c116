// `--pipeline off`, the reference tool's synchronous loop (one long-poll per event, then the write, then the
// index write), on the one pipeline: a reload, tailing (values, directories, deletes, TTL keys), a stop and a
// restart from the stored index, the stored index following each event.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { ok, storeIndex } from '../helpers/raw.js';
import { expectTreesEqual } from '../helpers/tree.js';

let pair: Pair;
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await pair?.stop();
});

const args = () => ['--pipeline', 'off', '--src-prefix', '/sync', '--dst-prefix', '/sync', '--strip', pair.src.clientUrl, pair.dst.clientUrl];

describe('--pipeline off', () => {
  it('reloads, tails, stops and resumes from the stored index, event by event', async () => {
    const src = pair.src.clientUrl;
    for (let i = 0; i < 5; i++) await ok(src, 'PUT', `/sync/pre/${i}`, { value: `v${i}` });
    const first = await spawnMirror(['--reload', ...args()]);
    try {
      await first.waitForState('tailing');
      await ok(src, 'PUT', '/sync/a', { value: '1' });
      await ok(src, 'PUT', '/sync/dir', { dir: true });
      await ok(src, 'PUT', '/sync/dir/x', { value: 'x' });
      await ok(src, 'PUT', '/sync/ttl', { value: 't', ttl: 60 });
      // Outside the prefix: no quiet proofs without the pipeline, so the stored index passes it with the next event.
      await ok(src, 'PUT', '/other/outside', { value: 'no' });
      await ok(src, 'DELETE', '/sync/pre/0');
      await waitForIndex(pair.dstClient, '/__replication/sync', await storeIndex(src));
      await expectTreesEqual(pair.srcClient, '/sync', pair.dstClient, '/sync');
      const state = await first.state();
      expect(state.ordering).toMatchObject({ current: 'strict' });
    } finally {
      expect(await first.kill('SIGTERM')).toBe(0);
    }
    // Written while no mirror runs: the restart replays them from the stored index.
    await ok(src, 'DELETE', '/sync/dir', { recursive: true });
    await ok(src, 'PUT', '/sync/a', { value: '2' });
    const second = await spawnMirror(args());
    try {
      await second.waitForState('tailing');
      await ok(src, 'PUT', '/sync/b', { value: '3' });
      await waitForIndex(pair.dstClient, '/__replication/sync', await storeIndex(src));
      await expectTreesEqual(pair.srcClient, '/sync', pair.dstClient, '/sync');
    } finally {
      expect(await second.kill('SIGTERM')).toBe(0);
    }
  });
});
