// kill -9 of the mirror at random moments under continuous mixed writes, restarted without --reload each time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual, waitForTtlsGone } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { sleep, storeIndex } from '../helpers/raw.js';
import { rng, startWorkload } from '../helpers/workload.js';

let pair: Pair;
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await pair?.stop();
});

describe('crash safety', () => {
  it('never refuses to continue after kill -9 and ends with equal trees', async () => {
    const args = ['--src-prefix', '/crash', '--dst-prefix', '/crash', '--strip', pair.src.clientUrl, pair.dst.clientUrl];
    const first = await spawnMirror(['--reload', ...args]);
    await first.waitForState('tailing');
    const workload = startWorkload(pair.src.clientUrl, '/crash', { seed: 20261126, concurrency: 3 });
    const random = rng(7);
    let current = first;
    for (let round = 0; round < 20; round++) {
      await sleep(150 + Math.floor(random() * 700));
      await current.kill('SIGKILL');
      current = await spawnMirror(args);
      const s = await current.waitForState((st) => st.state === 'tailing' || st.state === 'failed', 20_000);
      expect(s.state, `round ${round}: ${current.stderr()}`).toBe('tailing');
    }
    const writes = await workload.stop();
    expect(writes).toBeGreaterThan(200);
    await waitForTtlsGone(pair.srcClient, '/crash'); // their expiries are source events the mirror must carry too
    await waitForIndex(pair.dstClient, '/__replication/crash', await storeIndex(pair.src.clientUrl), 30_000);
    await expectTreesEqual(pair.srcClient, '/crash', pair.dstClient, '/crash', { timeoutMs: 15_000 });
    await current.kill('SIGTERM');
  });
});
