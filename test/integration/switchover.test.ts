// `etcd-mirror switchover`: real etcds, the real binary. The mirror under load, refusals that change nothing, the
// switchover (killed half-way and run again), the reverse mirror from the printed command, the fence holding against
// the old direction (running and restarted, --ha too), and switching back.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { EtcdClient } from '../../src/etcd/v2/client.js';
import { KeyNotFoundError } from '../../src/etcd/errors.js';
import { BIN, runMirror, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { b, startV3Pair, v3Tree, type V3Pair } from '../helpers/v3-pair.js';
import { waitFor } from '../helpers/wait.js';

let pair: Pair | undefined;
let v3: V3Pair | undefined;
afterAll(async () => {
  await pair?.stop();
  await v3?.stop();
});

const oneLine = (stderr: string): string => {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  return lines[0]!;
};

const switchover = (args: string[]) => runMirror(['switchover', '--quiet', '0.5', ...args], 60_000);

/** The reverse mirror's arguments, from the line of step 4 (our test values need no shell quoting). */
const reverseArgs = (stdout: string): string[] => {
  const line = stdout.split('\n').find((l) => l.startsWith('step 4/4 reverse mirror: '));
  expect(line, stdout).toBeDefined();
  const words = line!.slice('step 4/4 reverse mirror: '.length).split(' ');
  expect(words[0]).toBe('etcd-mirror');
  return words.slice(1);
};

/** Writes to OLD until stopped: the mirror under load. */
function load(put: (i: number) => Promise<unknown>): { stop(): Promise<number> } {
  let stopped = false;
  let n = 0;
  const loop = (async () => {
    while (!stopped) await put(n++);
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return n;
    },
  };
}

async function v2Value(c: EtcdClient, key: string): Promise<string | null> {
  try {
    return (await c.get(key)).body.node.value ?? null;
  } catch (err) {
    if (err instanceof KeyNotFoundError) return null;
    throw err;
  }
}

describe('switchover v2 → v2', () => {
  it('refuses without changing anything, survives a kill -9, fences the old direction, reverses and switches back', async () => {
    pair = await startPair();
    const { src: oldEtcd, dst: newEtcd, srcClient: OLD, dstClient: NEW } = pair;
    const flags = ['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip'];
    for (let i = 0; i < 20; i++) await OLD.put(`/conftool/k${i}`, { value: `v${i}` });
    const forwardArgs = [...flags, oldEtcd.clientUrl, newEtcd.clientUrl];
    let forward: MirrorProcess = await spawnMirror(['--reload', ...forwardArgs]);
    await forward.waitForState('tailing');

    // Under load: writes are still arriving, so nothing is done.
    const writes = load((i) => OLD.put(`/conftool/load/k${i % 50}`, { value: String(i) }));
    const busy = await switchover(forwardArgs);
    const written = await writes.stop();
    expect(written).toBeGreaterThan(0);
    expect(busy.code).toBe(1);
    expect(oneLine(busy.stderr)).toMatch(/^etcd-mirror: switchover refused: quiet: writes are still arriving on OLD.*nothing was changed$/);
    // Refused before any request: the mapping, the APIs; bad flags exit 2.
    const regex = await switchover(['--src-prefix', '/conftool', '--dst-prefix', '/other', '--strip', '--src-ignore-keys-regex', '.*/x', oldEtcd.clientUrl, newEtcd.clientUrl]);
    expect([regex.code, oneLine(regex.stderr)]).toEqual([1, expect.stringContaining('refused: mapping: --src-ignore-keys-regex')]);
    const bridge = await switchover([...flags, '--dst-api', 'v3', oldEtcd.clientUrl, newEtcd.clientUrl]);
    expect([bridge.code, oneLine(bridge.stderr)]).toEqual([1, expect.stringContaining('refused: APIs: OLD is v2 and NEW is v3')]);
    const bad = await runMirror(['switchover', '--quiet', 'soon', ...forwardArgs]);
    expect([bad.code, oneLine(bad.stderr)]).toEqual([2, 'etcd-mirror: error: --quiet: expected seconds from 0 to 3600']);
    expect((await forward.state()).state).toBe('tailing');

    // The mirror stopped: NEW's tree differs (a key of its own), then the mirror falls behind.
    await forward.kill('SIGTERM');
    await NEW.put('/conftool/only-on-new', { value: 'x' });
    const differ = await switchover(forwardArgs);
    expect([differ.code, oneLine(differ.stderr)]).toEqual([1, expect.stringContaining('refused: trees: OLD and NEW differ under the prefixes: 0 missing, 1 extra')]);
    await NEW.delete('/conftool/only-on-new');
    await OLD.put('/conftool/late', { value: 'late' });
    const behind = await switchover(forwardArgs);
    expect([behind.code, oneLine(behind.stderr)]).toEqual([1, expect.stringContaining('refused: caught up: the mirror is behind')]);
    expect(await v2Value(NEW, '/__replication/__FENCE__|conftool')).toBeNull();
    expect(await v2Value(OLD, '/__replication/conftool')).toBeNull();
    forward = await spawnMirror(forwardArgs);
    await waitFor(async () => (await v2Value(NEW, '/conftool/late')) === 'late', 'the late write on NEW');

    const dry = await switchover(['--dry-run', ...forwardArgs]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('step 2/4 would write the fence /__replication/__FENCE__|conftool on NEW');
    expect(dry.stdout).toContain('dry run: nothing was changed');
    expect(await v2Value(NEW, '/__replication/__FENCE__|conftool')).toBeNull();

    // kill -9 once the fence is written; the rerun finds it and completes.
    const first = spawn(process.execPath, [BIN, 'switchover', '--quiet', '0.5', ...forwardArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    let firstOut = '';
    first.stdout.setEncoding('utf8').on('data', (c: string) => (firstOut += c));
    await waitFor(() => firstOut.includes('step 2/4 fenced: '), 'step 2', 30_000);
    first.kill('SIGKILL');
    await forward.waitForState('fenced', 10_000);
    const rerun = await switchover(forwardArgs);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toMatch(/step 1\/4 caught up: .*trees equal/);
    expect(rerun.stdout).toContain('step 2/4 fenced already: /__replication/__FENCE__|conftool on NEW');
    expect(rerun.stdout).toMatch(/step 3\/4 reverse checkpoint: (stored|\/__replication\/conftool on OLD is) \d+/);
    expect(rerun.stdout).not.toContain(newEtcd.clientUrl.replace('http://', 'http://x:'));
    const fenceIndex = (await NEW.get('/__replication/__FENCE__|conftool')).body.node.modifiedIndex;
    expect(await v2Value(OLD, '/__replication/conftool')).toBe(String(fenceIndex));

    // The old direction: stood down, says why, writes nothing; restarted, it refuses.
    const fenced = await forward.state();
    expect([fenced.ready, fenced.fenced]).toEqual([false, expect.stringMatching(/^fenced by a switchover at \d{4}-/)]);
    expect(await forward.metrics()).toMatch(/^etcdmirror_fenced 1$/m);
    const args = reverseArgs(rerun.stdout);
    expect(args).toEqual([...flags, newEtcd.clientUrl, oldEtcd.clientUrl]);
    const reverse = await spawnMirror(args);
    await reverse.waitForState('tailing');
    await NEW.put('/conftool/from-new', { value: 'new' });
    await waitFor(async () => (await v2Value(OLD, '/conftool/from-new')) === 'new', 'a write on NEW arriving on OLD');
    await OLD.put('/conftool/stray', { value: 'stray' });
    await NEW.put('/conftool/after-stray', { value: 'later' });
    await waitFor(async () => (await v2Value(OLD, '/conftool/after-stray')) === 'later', 'a later write on NEW arriving on OLD');
    expect(await v2Value(NEW, '/conftool/stray')).toBeNull();
    // Nothing on NEW was written by the old direction after the fence: its checkpoint and data predate it.
    expect((await NEW.get('/__replication/conftool')).body.node.modifiedIndex).toBeLessThan(fenceIndex);
    expect(forward.proc.exitCode).toBeNull();
    await forward.kill('SIGTERM');
    const restarted = await runMirror(['--port', '0', '--listen-address', '127.0.0.1', ...forwardArgs]);
    expect([restarted.code, oneLine(restarted.stderr)]).toEqual([1, expect.stringMatching(/^etcd-mirror: error: refusing to start: fenced by a switchover at /)]);
    expect(await v2Value(NEW, '/conftool/stray')).toBeNull();

    // The reverse mirror treats OLD as its replica: it repairs the stray write there.
    await waitFor(async () => (await v2Value(OLD, '/conftool/stray')) === null && (await reverse.state()).lagEvents === 0, 'the stray write on OLD healed');

    // Switch back: the same command, roles exchanged; it lifts the fence it set on NEW, and only that.
    const back = await switchover(args);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toContain('lifted the fence /__replication/__FENCE__|conftool on OLD');
    await reverse.waitForState('fenced', 10_000);
    expect(reverseArgs(back.stdout)).toEqual(forwardArgs);
    forward = await spawnMirror(forwardArgs);
    await forward.waitForState('tailing');
    await OLD.put('/conftool/back', { value: 'home' });
    await waitFor(async () => (await v2Value(NEW, '/conftool/back')) === 'home', 'a write on OLD arriving on NEW again');
    expect(await v2Value(NEW, '/conftool/from-new')).toBe('new');
    await NEW.put('/conftool/stray-new', { value: 'x' });
    await waitForIndex(NEW, '/__replication/conftool', (await OLD.get('/')).etcdIndex);
    expect(await v2Value(OLD, '/conftool/stray-new')).toBeNull();
    await Promise.all([forward.kill('SIGTERM'), reverse.kill('SIGTERM')]);
  });
});

describe('switchover v3 → v3', () => {
  it('two --ha instances stand down, the reverse mirror takes over from the fence revision, switching back lifts the fence', async () => {
    v3 = await startV3Pair();
    const { src: oldEtcd, dst: newEtcd, s: OLD, d: NEW } = v3;
    // Renaming mapping: /app on OLD is /replica/app on NEW; the reverse strips /replica.
    const forwardArgs = ['--src-api', 'v3', '--dst-api', 'v3', '--src-prefix', '/app', oldEtcd.clientUrl, newEtcd.clientUrl];
    for (let i = 0; i < 20; i++) await OLD.put(b(`/app/k${i}`), b(`v${i}`));
    const a = await spawnMirror(['--reload', '--ha', '--instance-id', 'a', ...forwardArgs]);
    await a.waitForState('tailing');
    const standby = await spawnMirror(['--ha', '--instance-id', 'b', ...forwardArgs]);
    await standby.waitForState('standby');
    const writes = load((i) => OLD.put(b(`/app/load/k${i % 50}`), b(String(i))));
    await waitFor(async () => ((await a.state()).appliedIndex as number) > 30, 'the mirror applying the load');
    await writes.stop();

    const out = await runMirror(['switchover', '--quiet', '1.5', ...forwardArgs], 60_000);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.trim().split('\n').map((l) => l.slice(0, 12))).toEqual(['step 1/4 cau', 'step 2/4 fen', 'step 3/4 rev', 'step 4/4 rev']);
    await Promise.all([a.waitForState('fenced', 5_000), standby.waitForState('fenced', 5_000)]);
    const fence = (await NEW.range(b('/__replication/__FENCE__|replica|app'))).kvs[0]!;
    expect((await OLD.range(b('/__replication/app'))).kvs[0]?.value.toString()).toBe(String(fence.modRevision));
    const args = reverseArgs(out.stdout);
    expect(args).toEqual(['--src-prefix', '/replica/app', '--dst-prefix', '/app', '--strip', '--src-api', 'v3', '--dst-api', 'v3', newEtcd.clientUrl, oldEtcd.clientUrl]);
    const reverse = await spawnMirror(args);
    await reverse.waitForState('tailing');
    await NEW.put(b('/replica/app/from-new'), b('new'));
    await waitFor(async () => (await OLD.range(b('/app/from-new'))).kvs[0]?.value.toString() === 'new', 'a write on NEW arriving on OLD');
    await OLD.put(b('/app/stray'), b('stray'));
    await NEW.put(b('/replica/app/after-stray'), b('later'));
    await waitFor(async () => (await OLD.range(b('/app/after-stray'))).kvs[0] !== undefined, 'a later write arriving on OLD');
    // NEW's event log after the fence: only the test's own writes.
    const after = [...(await v3Tree(NEW, '/replica/app')).keys()].filter((k) => k.includes('stray') || k.includes('from-new'));
    expect(after.sort()).toEqual(['/replica/app/after-stray', '/replica/app/from-new']);
    expect((await NEW.range(b('/__replication/replica'))).kvs[0]!.modRevision).toBeLessThan(fence.modRevision);

    // Switch back, then the old direction runs again from the reverse checkpoint.
    await OLD.deleteRange(b('/app/stray'));
    await waitFor(async () => ((await reverse.state()).lagEvents as number) === 0, 'the reverse mirror caught up');
    const back = await runMirror(['switchover', '--quiet', '1.5', ...args], 60_000);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toContain('lifted the fence /__replication/__FENCE__|replica|app on OLD');
    await reverse.waitForState('fenced', 5_000);
    await Promise.all([a.kill('SIGTERM'), standby.kill('SIGTERM')]);
    const again = await spawnMirror(reverseArgs(back.stdout));
    await again.waitForState('tailing');
    await OLD.put(b('/app/back'), b('home'));
    await waitFor(async () => (await NEW.range(b('/replica/app/back'))).kvs[0]?.value.toString() === 'home', 'OLD → NEW again');
    await Promise.all([again.kill('SIGTERM'), reverse.kill('SIGTERM')]);
  });
});
