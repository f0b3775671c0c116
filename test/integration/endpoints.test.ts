// Several member URLs per cluster: requests fail over; a member of another cluster is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { ok, sleep, storeIndex } from '../helpers/raw.js';

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
    const S = pair.src.clientUrl;
    await ok(pair.dst.clientUrl, 'PUT', '/__replication/mixed', { value: String(await storeIndex(S)) });
    const m = await spawnMirror(['--src-prefix', '/multi', '--dst-prefix', '/mixed', '--strip', `${S},${stranger.clientUrl}`, pair.dst.clientUrl]);
    try {
      await m.waitForState('tailing');
      // The mirror learns which cluster its source is from the first member that answers. 'tailing' is entered
      // before the first source request is even sent: had src died before answering, the stranger's would be the
      // only cluster id ever seen, and nothing could tell it apart. So wait until the mirror has replicated an
      // event it can only have read from src.
      await ok(S, 'PUT', '/multi/c', { value: '3' });
      await waitForIndex(pair.dstClient, '/__replication/mixed', await storeIndex(S));
      expect((await pair.dstClient.get('/mixed/c')).body.node.value).toBe('3');

      await pair.src.kill('SIGKILL'); // the next source request fails over to the stranger
      // Refusing takes one failed-over request (milliseconds); the bound only keeps a regression from hanging.
      const outcome = await Promise.race([m.exited(), sleep(30_000).then(() => `still running: ${JSON.stringify(m.logs.slice(-5))}`)]);
      expect(outcome).toBe(1);
      expect(m.stderr()).toMatch(/belongs to cluster [0-9a-f]+, but .* to cluster [0-9a-f]+: the URLs given are not members of one cluster/);
      expect(m.logs.some((l) => l.to === 'failed' && (l.fault as { code?: string } | undefined)?.code === 'EM_ERR_CLUSTER_ID_MISMATCH')).toBe(true);
    } finally {
      await m.kill('SIGKILL');
      await pair.src.restart();
    }
  });

  it('refuses a source whose history does not reach the stored index (the only member answering is a stranger)', async () => {
    // The first member is down from the start: the stranger's cluster id is the only one ever seen, but its store
    // index is far below the index stored for this replica, which a cluster's index never is.
    const stored = (await storeIndex(stranger.clientUrl)) + 10_000;
    await ok(pair.dst.clientUrl, 'PUT', '/__replication/stranger', { value: String(stored) });
    const dead = `http://127.0.0.1:${await freePort()}`;
    const m = await spawnMirror(['--src-prefix', '/multi', '--dst-prefix', '/stranger', '--strip', `${dead},${stranger.clientUrl}`, pair.dst.clientUrl]);
    try {
      const outcome = await Promise.race([m.exited(), sleep(30_000).then(() => `still running: ${JSON.stringify(m.logs.slice(-5))}`)]);
      expect(outcome).toBe(1);
      expect(m.stderr()).toMatch(/store index \d+ is below the stored replication index 1\d{4}: SRC is another cluster/);
      expect((await pair.dstClient.get('/__replication/stranger')).body.node.value).toBe(String(stored));
    } finally {
      await m.kill('SIGKILL');
    }
  });
});
