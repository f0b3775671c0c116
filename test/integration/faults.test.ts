// An unreachable or restarting etcd is not bad configuration: stalled, retry with backoff, continue.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { retriesSince, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, storeIndex } from '../helpers/raw.js';

let pair: Pair;
let m: MirrorProcess;
beforeAll(async () => {
  pair = await startPair();
  await ok(pair.src.clientUrl, 'PUT', '/f/a', { value: '0' });
  m = await spawnMirror(['--reload', '--src-prefix', '/f', '--dst-prefix', '/f', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
  await m.waitForState('tailing');
});
afterAll(async () => {
  await m?.kill('SIGTERM');
  await pair?.stop();
});

describe('etcd outages', () => {
  it('destination down: stalled, then tailing again once it is back, nothing lost', async () => {
    const since = Date.now();
    await pair.dst.kill('SIGKILL');
    for (let i = 0; i < 20; i++) await ok(pair.src.clientUrl, 'PUT', `/f/during-dst-outage/${i}`, { value: String(i) });
    const stalled = await m.waitForState('stalled', 10_000);
    expect(stalled.lastFault).toMatchObject({ retryable: true });
    await m.waitForState((s) => retriesSince(s, since) >= 1, 15_000); // down until the mirror retried against it
    await pair.dst.restart();
    await m.waitForState('tailing', 40_000);
    await waitForIndex(pair.dstClient, '/__replication/f', await storeIndex(pair.src.clientUrl), 20_000);
    await expectTreesEqual(pair.srcClient, '/f', pair.dstClient, '/f');
    const stalls = m.logs.filter((l) => l.msg === 'state: stalled').length;
    expect(stalls).toBeGreaterThanOrEqual(1);
  });

  it('source down: stalled, then tailing again once it is back, nothing lost', async () => {
    await pair.src.kill('SIGKILL');
    await m.waitForState('stalled', 15_000);
    await pair.src.restart();
    for (let i = 0; i < 20; i++) await ok(pair.src.clientUrl, 'PUT', `/f/after-src-outage/${i}`, { value: String(i) });
    await m.waitForState('tailing', 40_000);
    await waitForIndex(pair.dstClient, '/__replication/f', await storeIndex(pair.src.clientUrl), 20_000);
    await expectTreesEqual(pair.srcClient, '/f', pair.dstClient, '/f');
    expect(m.proc.exitCode).toBeNull();
  });
});
