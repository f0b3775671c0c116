// --ha: two instances of the real binary against one source and one destination (real etcd processes). Oracles:
// /state of both, sampled; the destination's own event log (the checkpoint never decreases, no key moves back).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, type MirrorProcess } from '../helpers/mirror.js';
import { b, record, startV3Pair, v3Tree, values, waitFor, type V3Pair } from '../helpers/v3-pair.js';

const TTL = 3;
const CHECKPOINT = '/__replication/conftool';
let pair: V3Pair;

beforeAll(async () => {
  pair = await startV3Pair();
});
afterAll(async () => {
  await pair?.stop();
});

function instance(id: string, extra: string[] = []): Promise<MirrorProcess> {
  return spawnMirror([
    '--ha', '--instance-id', id, '--ha-ttl', String(TTL), '--src-api', 'v3', '--dst-api', 'v3',
    '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', ...extra, pair.src.clientUrl, pair.dst.clientUrl,
  ]);
}

const roleOf = async (m: MirrorProcess): Promise<string> => {
  if (m.proc.exitCode !== null || m.proc.signalCode !== null) return 'down';
  try {
    const s = await m.state();
    return s.state === 'tailing' ? 'active' : String(s.role ?? s.state);
  } catch {
    return 'down';
  }
};

/** Writes unique, increasing values until stopped: value n is written after every value below it. */
function writer() {
  let n = 0;
  let on = true;
  const done = (async () => {
    while (on && n < 50_000) await pair.s.put(b(`/conftool/w/${n % 40}`), b(String(n++)));
  })();
  return { stop: async () => ((on = false), await done), count: () => n };
}

async function treesEqual(): Promise<void> {
  const rev = (await pair.s.status()).revision;
  await waitFor(async () => Number((await pair.d.range(b(CHECKPOINT))).kvs[0]?.value.toString() ?? -1) >= rev, 'checkpoint caught up');
  expect(values(await v3Tree(pair.d, '/conftool'))).toEqual(values(await v3Tree(pair.s, '/conftool')));
}

/** From the destination log: the checkpoint's values in order, and keys whose value went down. */
function fencingEvidence(log: ReturnType<typeof record>['log']): { checkpointDrops: number; keysBack: number; checkpoints: number } {
  let last = -1;
  let checkpointDrops = 0;
  let checkpoints = 0;
  const latest = new Map<string, number>();
  let keysBack = 0;
  for (const r of log)
    for (const e of r.events) {
      if (e.type !== 'put') continue;
      const key = e.kv.key.toString();
      const v = Number(e.kv.value.toString());
      if (key === CHECKPOINT) {
        checkpoints++;
        if (v < last) checkpointDrops++;
        last = Math.max(last, v);
      } else if (key.startsWith('/conftool/w/')) {
        if (v < (latest.get(key) ?? -1)) keysBack++;
        latest.set(key, Math.max(v, latest.get(key) ?? -1));
      }
    }
  return { checkpointDrops, keysBack, checkpoints };
}

describe('--ha (v3 destination)', () => {
  it('two instances under writes: one active at every sample; kill -9 of the active → the other within TTL + 2 s; the killed one returns as standby', async () => {
    const a = await instance('host-a', ['--reload']);
    await a.waitForState('tailing');
    const bInst = await instance('host-b');
    await bInst.waitForState((s) => s.statePath === 'standby.waiting');
    expect((await bInst.state()).readyReason).toBe('standby: active is host-a');
    const w = writer();
    const samples: string[][] = [];
    for (let i = 0; i < 20; i++) {
      samples.push([await roleOf(a), await roleOf(bInst)]);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(samples.every((s) => s.filter((r) => r === 'active').length === 1)).toBe(true);
    const killedAt = Date.now();
    await a.kill('SIGKILL');
    await bInst.waitForState('tailing', (TTL + 2) * 1000);
    const takeoverMs = Date.now() - killedAt;
    expect(takeoverMs).toBeLessThan((TTL + 2) * 1000);
    const a2 = await instance('host-a');
    await a2.waitForState((s) => s.statePath === 'standby.waiting');
    for (let i = 0; i < 10; i++) {
      expect([await roleOf(a2), await roleOf(bInst)].filter((r) => r === 'active')).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 100));
    }
    await w.stop();
    await treesEqual();
    expect(await bInst.metrics()).toMatch(/etcdmirror_ha_role\{role="active"\} 1/);
    expect(await a2.metrics()).toMatch(/etcdmirror_ha_role\{role="standby"\} 1/);
    console.log(`kill -9 takeover: ${takeoverMs} ms (TTL ${TTL} s)`);
    await Promise.all([a2.kill('SIGTERM'), bInst.kill('SIGTERM')]);
  });

  it('a paused active (SIGSTOP past the TTL) is replaced, and after SIGCONT stands by without writing: the checkpoint never decreases, no key moves back', async () => {
    const a = await instance('host-a', ['--reload']);
    await a.waitForState('tailing');
    const bInst = await instance('host-b');
    await bInst.waitForState((s) => s.statePath === 'standby.waiting');
    const log = record(pair.d, '/', (await pair.d.status()).revision + 1);
    const w = writer();
    await waitFor(async () => w.count() > 300, 'writes flowing');
    a.proc.kill('SIGSTOP');
    const pausedAt = Date.now();
    await bInst.waitForState('tailing', (TTL + 2) * 1000);
    const takeoverMs = Date.now() - pausedAt;
    await waitFor(async () => w.count() > 1_000 + 300, 'more writes under the new active');
    a.proc.kill('SIGCONT');
    await a.waitForState((s) => s.state === 'standby', 10_000);
    await w.stop();
    await treesEqual();
    log.stop();
    const evidence = fencingEvidence(log.log);
    expect(evidence.checkpoints).toBeGreaterThan(10);
    expect(evidence.checkpointDrops).toBe(0);
    expect(evidence.keysBack).toBe(0);
    expect(a.logs.some((l) => String(l.msg).startsWith('HA: standing by'))).toBe(true);
    console.log(`pause takeover: ${takeoverMs} ms; fencing: ${JSON.stringify(evidence)}`);
    await Promise.all([a.kill('SIGTERM'), bInst.kill('SIGTERM')]);
  });

  it('SIGTERM on the active hands over in under a second', async () => {
    const a = await instance('host-a', ['--reload']);
    await a.waitForState('tailing');
    const bInst = await instance('host-b');
    await bInst.waitForState((s) => s.statePath === 'standby.waiting');
    const stoppedAt = Date.now();
    const exited = a.kill('SIGTERM');
    await bInst.waitForState('tailing', 5_000);
    const handoverMs = Date.now() - stoppedAt;
    expect(await exited).toBe(0);
    expect(handoverMs).toBeLessThan(1_000 * TTL);
    await pair.s.put(b('/conftool/after-handover'), b('1'));
    await treesEqual();
    console.log(`graceful handover: ${handoverMs} ms`);
    await bInst.kill('SIGTERM');
  });
});
