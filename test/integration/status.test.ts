// `etcd-mirror status [URL]` against real running mirrors: ready → 0, answering but not ready → 1, nothing there → 2.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/etcd/process.js';
import { runMirror, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, storeIndex } from '../helpers/raw.js';

let pair: Pair;
let tailing: MirrorProcess;
beforeAll(async () => {
  pair = await startPair();
  await ok(pair.src.clientUrl, 'PUT', '/st/a', { value: '1' });
  tailing = await spawnMirror(['--reload', '--src-prefix', '/st', '--dst-prefix', '/st', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
  await waitForIndex(pair.dstClient, '/__replication/st', await storeIndex(pair.src.clientUrl));
});
afterAll(async () => {
  await tailing?.kill('SIGTERM');
  await pair?.stop();
});

describe('etcd-mirror status', () => {
  it('a tailing mirror: exit 0, with its state, lag, headroom, position, sides and transitions', async () => {
    await tailing.waitForState((s) => s.ready === true);
    const r = await runMirror(['status', `http://127.0.0.1:${tailing.port}`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^daemon +http:\/\/127\.0\.0\.1:\d+ \(etcd-mirror \d+\.\d+\.\d+\)$/m);
    expect(r.stdout).toMatch(/^state +tailing \(running\.tailing\)/m);
    expect(r.stdout).toMatch(/^ready +yes /m);
    expect(r.stdout).toMatch(/^role +single instance \(no --ha\)$/m);
    expect(r.stdout).toMatch(/^lag +\d+ events, \d+\.\d s$/m);
    expect(r.stdout).toMatch(/^headroom +\d+ of 1000 events/m);
    expect(r.stdout).toMatch(/^position +source store index \d+, stored index \d+/m);
    expect(r.stdout).toContain(`${pair.src.clientUrl} (v2), prefix /st`);
    expect(r.stdout).toContain(`${pair.dst.clientUrl} (v2), prefix /st, index at /__replication/st`);
    expect(r.stdout).toMatch(/^last fault +none$/m);
    expect(r.stdout).toMatch(/^transitions \(newest first\)\n {2}\S+ {2}\w+ → tailing/m);
  });

  it('a mirror whose destination is down: exit 1, with the state and the fault that keeps it from being ready', async () => {
    // A second mirror, started while the destination is down, goes starting ⇄ stalled and never reaches tailing.
    await pair.dst.kill('SIGKILL');
    const stuck = await spawnMirror(['--src-prefix', '/st', '--dst-prefix', '/st', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
    try {
      await stuck.waitForState((s) => s.state === 'stalled' && s.lastFault !== null);
      const r = await runMirror(['status', `127.0.0.1:${stuck.port}`]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^state +(stalled|starting)/m);
      expect(r.stdout).toMatch(/^ready +no$/m);
      expect(r.stdout).toMatch(/^last fault +EM_ERR_\w+ \(retrying\): .*ECONNREFUSED/m);
      expect(r.stdout).not.toMatch(/→ tailing/);
    } finally {
      await stuck.kill('SIGTERM');
      await pair.dst.restart();
    }
  });

  it('nothing listening: exit 2, one line on stderr', async () => {
    const port = await freePort();
    const r = await runMirror(['status', `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^etcd-mirror: error: cannot get the state from http://127\\.0\\.0\\.1:${port}/state: .*ECONNREFUSED.*\\n$`));
  });

  it('bad usage: exit 2, one line', async () => {
    const r = await runMirror(['status', 'ftp://x:1']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
