// --reload reconciles a diverged replica without emptying it, and refuses mass deletes unless told to.
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, sleep, storeIndex } from '../helpers/raw.js';

let pair: Pair;
const mirrors: MirrorProcess[] = [];
beforeEach(async () => {
  pair = await startPair();
});
afterEach(async () => {
  await Promise.all(mirrors.splice(0).map((m) => m.kill('SIGTERM')));
  await pair.stop();
});

/** Records every event under `prefix` on the destination through a stream watch, until `stop()`. */
async function recordDestination(baseUrl: string, prefix: string) {
  const events: { action: string; key: string }[] = [];
  const ac = new AbortController();
  const res = await request(`${baseUrl}/v2/keys${prefix}?wait=true&recursive=true&stream=true`, { signal: ac.signal });
  let buf = '';
  const done = (async () => {
    try {
      for await (const chunk of res.body) {
        buf += chunk.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line) {
            const e = JSON.parse(line) as { action: string; node: { key: string } };
            events.push({ action: e.action, key: e.node.key });
          }
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    events,
    async stop() {
      ac.abort();
      await done;
    },
  };
}

describe('--reload', () => {
  it('converges a hand-diverged replica and never touches keys that are unchanged on the source', async () => {
    const S = pair.src.clientUrl;
    const D = pair.dst.clientUrl;
    for (let i = 0; i < 30; i++) await ok(S, 'PUT', `/pool/same${i}`, { value: `v${i}` });
    await ok(S, 'PUT', '/pool/dir/inner', { value: 'kept' });
    await ok(S, 'PUT', '/pool/changed', { value: 'new' });
    await ok(S, 'PUT', '/pool/ttl', { value: 't', ttl: 600 });
    await ok(S, 'PUT', '/pool/typeflip', { dir: true });
    // The replica: mostly equal, plus hand edits of every kind.
    for (let i = 0; i < 30; i++) await ok(D, 'PUT', `/pool/same${i}`, { value: `v${i}` });
    await ok(D, 'PUT', '/pool/dir/inner', { value: 'kept' });
    await ok(D, 'PUT', '/pool/changed', { value: 'old' });
    await ok(D, 'PUT', '/pool/extra', { value: 'delete me' });
    await ok(D, 'PUT', '/pool/extradir/a/b', { value: 'delete me too' });
    await ok(D, 'PUT', '/pool/typeflip', { value: 'was a file' });
    await ok(D, 'PUT', '/pool/ttl', { value: 't' }); // missing TTL
    await ok(D, 'PUT', '/__replication/pool', { value: '1' });

    const recorder = await recordDestination(D, '/pool');
    const m = await spawnMirror(['--reload', '--src-prefix', '/pool', '--dst-prefix', '/pool', '--strip', S, D]);
    mirrors.push(m);
    await m.waitForState('tailing');
    await expectTreesEqual(pair.srcClient, '/pool', pair.dstClient, '/pool');
    await waitForIndex(pair.dstClient, '/__replication/pool', await storeIndex(S));
    await sleep(300);
    await recorder.stop();

    const touched = new Set(recorder.events.map((e) => e.key));
    for (let i = 0; i < 30; i++) expect(touched.has(`/pool/same${i}`), `/pool/same${i} was rewritten`).toBe(false);
    expect(touched.has('/pool/dir/inner')).toBe(false);
    expect(recorder.events.filter((e) => e.action === 'delete').map((e) => e.key).sort()).toEqual(['/pool/extra', '/pool/extradir', '/pool/typeflip']);
    const log = await m.waitForLog((l) => l.msg === 'destination reconciled to the source snapshot');
    // unchanged: 30 keys, /pool/dir, /pool/dir/inner and /pool itself; deleted: extra and the 3 nodes of extradir
    expect(log).toMatchObject({ deleted: 4, unchanged: 33 });
  });

  it('refuses to empty the replica from an empty source, and a snapshot much smaller than the replica, unless --allow-mass-delete', async () => {
    const S = pair.src.clientUrl;
    const D = pair.dst.clientUrl;
    for (let i = 0; i < 10; i++) await ok(D, 'PUT', `/guard/k${i}`, { value: 'replica' });
    const args = ['--reload', '--src-prefix', '/guard', '--dst-prefix', '/guard', '--strip', S, D];

    const empty = await spawnMirror(args);
    mirrors.push(empty);
    const stalled = await empty.waitForState('stalled');
    expect(String(stalled.reason)).toMatch(/source snapshot .* is empty/);
    expect(await empty.metrics()).toMatch(/etcdmirror_mass_delete_refused_total [1-9]/);
    expect((await raw(D, 'GET', '/guard/k0')).status).toBe(200);
    await empty.kill('SIGTERM');

    for (let i = 0; i < 4; i++) await ok(S, 'PUT', `/guard/k${i}`, { value: 'replica' });
    const most = await spawnMirror(args);
    mirrors.push(most);
    const refused = await most.waitForState('stalled');
    expect(String(refused.reason)).toMatch(/holds 4 keys, less than 50% of the replica.s 10: it looks truncated/);
    expect((await raw(D, 'GET', '/guard/k9')).status).toBe(200);
    await most.kill('SIGTERM');

    const allowed = await spawnMirror(['--allow-mass-delete', ...args]);
    mirrors.push(allowed);
    await allowed.waitForState('tailing');
    await expectTreesEqual(pair.srcClient, '/guard', pair.dstClient, '/guard');
  });

  it('without --reload and without a stored index exits 1 with the reference message', async () => {
    const m = await spawnMirror(['--src-prefix', '/none', '--dst-prefix', '/none', pair.src.clientUrl, pair.dst.clientUrl]);
    expect(await m.exited()).toBe(1);
    expect(m.stderr()).toContain('The replication key could not be found. Restart with --reload!');
  });

  it('continues from an index stored by the reference tool, without --reload', async () => {
    const S = pair.src.clientUrl;
    await ok(S, 'PUT', '/conftool/a', { value: '1' });
    const at = await storeIndex(S);
    await ok(pair.dst.clientUrl, 'PUT', '/conftool/a', { value: '1' });
    await ok(pair.dst.clientUrl, 'PUT', '/__replication/conftool', { value: String(at) });
    const m = await spawnMirror(['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', S, pair.dst.clientUrl]);
    mirrors.push(m);
    await m.waitForState('tailing');
    await ok(S, 'PUT', '/conftool/b', { value: '2' });
    await waitForIndex(pair.dstClient, '/__replication/conftool', await storeIndex(S));
    await expectTreesEqual(pair.srcClient, '/conftool', pair.dstClient, '/conftool');
  });
});
