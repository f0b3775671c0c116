// Faults a cross-DC link and an etcd cluster produce, each under continuous mixed writes; each ends with equal
// trees and the mirror still running. Transient faults never end the process.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { sleep, storeIndex } from '../helpers/raw.js';
import { startWorkload, type Workload } from '../helpers/workload.js';

let pair: Pair;
let srcLink: FaultProxy;
let dstLink: FaultProxy;
let m: MirrorProcess;
let load: Workload | undefined;
let round = 0;

const port = (url: string) => Number(new URL(url).port);

beforeAll(async () => {
  pair = await startPair();
  srcLink = await startFaultProxy({ host: '127.0.0.1', port: port(pair.src.clientUrl) });
  dstLink = await startFaultProxy({ host: '127.0.0.1', port: port(pair.dst.clientUrl) });
  m = await spawnMirror(['--reload', '--src-prefix', '/fs', '--dst-prefix', '/fs', '--strip', srcLink.url, dstLink.url]);
  await m.waitForState('tailing');
});
afterAll(async () => {
  await load?.stop();
  await m?.kill('SIGTERM');
  await Promise.all([srcLink?.close(), dstLink?.close()]);
  await pair?.stop();
});
beforeEach(() => {
  load = startWorkload(pair.src.clientUrl, '/fs', { seed: 1000 + round++, concurrency: 2 });
});

const outOfWindowSoFar = () => m.logs.filter((l) => l.to === 'outOfWindow').length;

/** Stops the writes, waits for the mirror to catch up, and checks the trees and that it still runs. */
async function settle(timeoutMs = 60_000): Promise<void> {
  const writes = await load!.stop();
  load = undefined;
  expect(writes).toBeGreaterThan(50);
  await sleep(4_000); // TTL keys of the workload expire on the source
  await m.waitForState('tailing', timeoutMs);
  const target = await storeIndex(pair.src.clientUrl);
  await waitForIndex(pair.dstClient, '/__replication/fs', target, timeoutMs).catch(async (err: Error) => {
    const s = await m.state();
    throw new Error(`${err.message}; mirror state ${JSON.stringify({ ...s, timeline: undefined })}; last logs ${JSON.stringify(m.logs.slice(-8))}`);
  });
  await expectTreesEqual(pair.srcClient, '/fs', pair.dstClient, '/fs', { timeoutMs: 15_000 });
  expect(m.proc.exitCode).toBeNull();
}

describe('fault injection under continuous writes', () => {
  it('source etcd stopped and restarted on the same data dir', async () => {
    await sleep(500);
    await pair.src.kill('SIGTERM');
    await m.waitForState('stalled', 15_000);
    await sleep(2_000);
    await pair.src.restart();
    await settle();
  });

  it('destination etcd stopped and restarted', async () => {
    await sleep(500);
    await pair.dst.kill('SIGTERM');
    await m.waitForState('stalled', 15_000);
    await sleep(2_000);
    await pair.dst.restart();
    await settle();
  });

  it('30 s blackhole of the source link', async () => {
    await sleep(500);
    srcLink.blackhole(true);
    await m.waitForState('stalled', 20_000);
    await sleep(30_000 - 5_000);
    srcLink.blackhole(false);
    await settle();
  });

  it('30 s blackhole of the destination link', async () => {
    await sleep(500);
    dstLink.blackhole(true);
    await m.waitForState('stalled', 30_000);
    await sleep(10_000);
    dstLink.blackhole(false);
    await settle();
  });

  it('repeated connection cuts on both links', async () => {
    for (let i = 0; i < 15; i++) {
      await sleep(300);
      (i % 2 ? srcLink : dstLink).cut();
    }
    await settle();
  });

  it('a silently stalled source stream (bytes stop, socket stays open)', async () => {
    await sleep(500);
    srcLink.freeze();
    await sleep(6_000);
    await settle();
    expect(await m.metrics()).toMatch(/etcdmirror_watch_polls_total\{outcome="(stalled|error)"\} [1-9]/);
  });

  it('a slow destination (+50 ms per write), at a write rate it can carry', async () => {
    await load!.stop();
    load = startWorkload(pair.src.clientUrl, '/fs', { seed: 77, concurrency: 2, rate: 50 });
    const before = outOfWindowSoFar();
    dstLink.setDelay(25);
    await sleep(8_000);
    expect(outOfWindowSoFar()).toBe(before); // it keeps up: no lost window
    await settle();
    dstLink.setDelay(0);
  });

  it('logs one line per state change, not one per retry', () => {
    // Each fault above logs its stall once and its recovery once; the retries in between are debug lines.
    const errors = m.logs.filter((l) => l.msg === 'state: stalled');
    const resumed = m.logs.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('resumed after'));
    expect(errors.length).toBeGreaterThanOrEqual(4);
    expect(errors.length).toBeLessThanOrEqual(12);
    expect(resumed.length).toBeGreaterThanOrEqual(1);
  });
});
