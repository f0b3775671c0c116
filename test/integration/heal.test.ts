// Someone edits or deletes destination keys by hand: the mirror heals them from the source and counts it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex } from '../helpers/raw.js';

let pair: Pair;
let m: MirrorProcess;
beforeAll(async () => {
  pair = await startPair();
  for (let i = 0; i < 5; i++) await ok(pair.src.clientUrl, 'PUT', `/h/k${i}`, { value: `v${i}` });
  await ok(pair.src.clientUrl, 'PUT', '/h/dir/a', { value: 'a' });
  m = await spawnMirror(['--reload', '--src-prefix', '/h', '--dst-prefix', '/h', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
  await m.waitForState('tailing');
  await waitForIndex(pair.dstClient, '/__replication/h', await storeIndex(pair.src.clientUrl));
});
afterAll(async () => {
  await m?.kill('SIGTERM');
  await pair?.stop();
});

const healedCount = async () => Number(/etcdmirror_healed_total\{reason="foreign change"\} (\d+)/.exec(await m.metrics())?.[1] ?? 0);

describe('hand edits on the destination', () => {
  it('an edited value, a deleted key, an extra key and a deleted dir are healed and counted', async () => {
    const D = pair.dst.clientUrl;
    await ok(D, 'PUT', '/h/k0', { value: 'edited by hand' });
    await ok(D, 'DELETE', '/h/k1');
    await ok(D, 'PUT', '/h/extra', { value: 'not on the source' });
    await ok(D, 'DELETE', '/h/dir', { recursive: true });
    await expectTreesEqual(pair.srcClient, '/h', pair.dstClient, '/h', { timeoutMs: 10_000 });
    await m.waitForState(() => true); // still running
    expect(await healedCount()).toBeGreaterThanOrEqual(4);
    expect(m.proc.exitCode).toBeNull();
  });

  it('its own writes are never taken for foreign ones', async () => {
    const before = await healedCount();
    for (let i = 0; i < 50; i++) await ok(pair.src.clientUrl, 'PUT', `/h/k${i % 5}`, { value: `w${i}` });
    await ok(pair.src.clientUrl, 'DELETE', '/h/dir', { recursive: true });
    await waitForIndex(pair.dstClient, '/__replication/h', await storeIndex(pair.src.clientUrl));
    await new Promise((r) => setTimeout(r, 2_000)); // the healer classifies every 250 ms: eight chances to get it wrong
    await expectTreesEqual(pair.srcClient, '/h', pair.dstClient, '/h');
    expect(await healedCount()).toBe(before);
    expect((await raw(pair.dst.clientUrl, 'GET', '/h/dir')).status).toBe(404);
  });
});
