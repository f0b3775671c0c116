// Several member URLs per cluster: requests fail over; a member of another cluster is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEtcd, type EtcdProcess } from '../../src/etcd-process.js';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { ok, storeIndex } from '../helpers/raw.js';

let pair: Pair;
let stranger: EtcdProcess;
beforeAll(async () => {
  [pair, stranger] = await Promise.all([startPair(), startEtcd({ name: 'stranger' })]);
});
afterAll(async () => {
  await Promise.all([pair?.stop(), stranger?.stop()]);
});

describe('member lists', () => {
  it('fails over from an unreachable member to a live one', async () => {
    const [deadSrc, deadDst] = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
    await ok(pair.src.clientUrl, 'PUT', '/multi/a', { value: '1' });
    const m = await spawnMirror(['--reload', '--src-prefix', '/multi', '--dst-prefix', '/multi', '--strip', `${deadSrc},${pair.src.clientUrl}`, `${deadDst},${pair.dst.clientUrl}`]);
    await m.waitForState('tailing');
    await ok(pair.src.clientUrl, 'PUT', '/multi/b', { value: '2' });
    await waitForIndex(pair.dstClient, '/__replication/multi', await storeIndex(pair.src.clientUrl));
    await expectTreesEqual(pair.srcClient, '/multi', pair.dstClient, '/multi');
    await m.kill('SIGTERM');
  });

  it('refuses a member that answers for another cluster', async () => {
    await ok(pair.dst.clientUrl, 'PUT', '/__replication/mixed', { value: String(await storeIndex(pair.src.clientUrl)) });
    const m = await spawnMirror(['--src-prefix', '/multi', '--dst-prefix', '/mixed', '--strip', `${pair.src.clientUrl},${stranger.clientUrl}`, pair.dst.clientUrl]);
    await m.waitForState('tailing');
    await pair.src.kill('SIGKILL'); // the next request fails over to the stranger
    try {
      await m.waitForState('failed', 15_000).catch(() => {});
      expect(await Promise.race([m.exited(), new Promise((r) => setTimeout(() => r('still running: ' + JSON.stringify(m.logs.slice(-5))), 10_000))])).toBe(1);
      expect(m.stderr()).toMatch(/belongs to cluster [0-9a-f]+, but .* to cluster [0-9a-f]+: the URLs given are not members of one cluster/);
    } finally {
      await pair.src.restart();
    }
  });
});
