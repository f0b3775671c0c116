// `--pipeline off`, the reference tool's synchronous loop (one long-poll per event, then the write, then the
// index write), on the one pipeline: a reload, tailing (values, directories, deletes, TTL keys), a stop and a
// restart from the stored index, the stored index following each event.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { ok, storeIndex } from '../helpers/raw.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { V3Client } from '../../src/etcd/v3/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { waitFor } from '../helpers/wait.js';

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

  it('the v2 → v3 bridge too: a reload, then each event with its checkpoint', async () => {
    const src = pair.src.clientUrl;
    // The source as the first test left it. etcd 3.4 serves both APIs: the pair's destination is the v3
    // destination here, under its own prefix.
    const d = new V3Client(parseCluster(pair.dst.clientUrl, 'dst'));
    const bridge = await spawnMirror(['--reload', '--src-api', 'v2', '--dst-api', 'v3', '--pipeline', 'off', '--src-prefix', '/sync', '--dst-prefix', '/bridge', '--strip', src, pair.dst.clientUrl]);
    try {
      await bridge.waitForState('tailing');
      await ok(src, 'PUT', '/sync/c', { value: '4' });
      await ok(src, 'DELETE', '/sync/b');
      const index = await storeIndex(src);
      await waitFor(async () => Number((await d.range(Buffer.from('/__replication/bridge'))).kvs[0]?.value.toString() ?? -1) >= index, `checkpoint ≥ ${index}`);
      const kvs = (await d.rangeAll(Buffer.from('/bridge/'), Buffer.from('/bridge0'))).kvs;
      const got = Object.fromEntries(kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
      expect(got).toMatchObject({ '/bridge/a': '2', '/bridge/c': '4', '/bridge/pre/1': 'v1' });
      expect(got['/bridge/b']).toBeUndefined();
      expect(got['/bridge/pre/0']).toBeUndefined();
    } finally {
      expect(await bridge.kill('SIGTERM')).toBe(0);
      await d.close();
    }
  });
});
