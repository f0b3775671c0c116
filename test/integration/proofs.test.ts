// Quiet proofs are guesses until confirmed: a watch's body that arrives after the silence threshold makes the
// poller claim a range that holds an event. The stored index must never pass such a claim — neither before the
// contradiction shows (unconfirmed claims are not stored) nor after a claim confirmed by time turns out wrong (the
// stored index is put back) — so that a kill -9 right after the contradiction loses nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex } from '../helpers/raw.js';
import { expectTreesEqual } from '../helpers/tree.js';

let pair: Pair;
let proxy: FaultProxy;
beforeAll(async () => {
  pair = await startPair();
  proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(pair.src.clientUrl).port) });
});
afterAll(async () => {
  await proxy?.close();
  await pair?.stop();
});

const stored = async (prefix: string) => Number(((await raw(pair.dst.clientUrl, 'GET', `/__replication${prefix}`)).body.node as { value: string }).value);

describe('proofs before persistence', () => {
  // 60 ms: later than the 15 ms silence threshold, sooner than the 100 ms a claim must stay uncontradicted.
  // 400 ms: a claim confirmed by time (and stored) before the contradiction arrives, then put back.
  it.each([60, 400])('a history match %i ms behind its headers: contradiction, kill -9, restart: nothing lost', async (lateMs) => {
    const prefix = `/proof${lateMs}`;
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', `${prefix}/before`, { value: 'b' });
    const args = ['--src-prefix', prefix, '--dst-prefix', prefix, '--strip'];
    const m = await spawnMirror(['--reload', ...args, proxy.url, pair.dst.clientUrl]);
    await m.waitForState('tailing');
    await waitForIndex(pair.dstClient, `/__replication${prefix}`, await storeIndex(S));
    proxy.lateBodies(lateMs);
    try {
      // A probe re-arms every 15–100 ms; only one registered after the event but before the stream (late too)
      // delivered it makes the wrong claim, so write events until one does (each has a fair chance).
      let contradiction: Record<string, unknown> | undefined;
      for (let i = 0; i < 40 && !contradiction; i++) {
        await ok(S, 'PUT', `${prefix}/late${i}`, { value: `must arrive ${i}` });
        contradiction = await m
          .waitForLog((l) => l.to === 'outOfWindow' && (l.fault as { code?: string } | undefined)?.code === 'EM_ERR_RESYNC_NEEDED', 400 + lateMs)
          .catch(() => undefined);
      }
      expect(contradiction, 'no wrong claim in 40 tries').toBeDefined();
      await m.kill('SIGKILL'); // right after the contradiction
      const wrong = Number(/delivered event (\d+) inside a range proven quiet/.exec(String(contradiction!.reason))?.[1]);
      expect(await stored(prefix)).toBeLessThan(wrong);
    } finally {
      proxy.lateBodies(0);
      await m.kill('SIGKILL');
    }
    const again = await spawnMirror([...args, pair.src.clientUrl, pair.dst.clientUrl]); // no --reload
    try {
      await again.waitForState('tailing');
      await waitForIndex(pair.dstClient, `/__replication${prefix}`, await storeIndex(S));
      await expectTreesEqual(pair.srcClient, prefix, pair.dstClient, prefix);
      expect(again.logs.some((l) => l.to === 'outOfWindow' || l.to === 'reloading')).toBe(false);
    } finally {
      await again.kill('SIGTERM');
    }
  });
});
