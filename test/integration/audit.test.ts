// The consistency audit (issue 20) with real etcds and the real binary: differences the mirror could not have
// seen (made on the destination while it was down, beyond the destination's history) are found by the next
// audit, repaired and counted; under writes, audits report nothing; the one-off `audit` command's exit codes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTreesEqual } from '../helpers/tree.js';
import { runMirror, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, sleep, storeIndex } from '../helpers/raw.js';
import { b, startV3Pair, v3Tree, waitFor, type V3Pair } from '../helpers/v3-pair.js';
import type { AuditJson } from '../../src/ui/wire.js';

const auditOf = async (m: MirrorProcess) => (await m.state()).audit as AuditJson;
const metric = (text: string, name: string): number => Number(new RegExp(`^${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

/** Every audit /state reports from now on until `count` have finished, in order. */
async function nextAudits(m: MirrorProcess, count: number): Promise<AuditJson[]> {
  const seen: AuditJson[] = [];
  await m.waitForState(() => true); // serving /state
  let last = (await auditOf(m)).lastAt;
  await waitFor(async () => {
    const a = await auditOf(m);
    if (a.lastAt !== last) {
      last = a.lastAt;
      seen.push(a);
    }
    return seen.length >= count;
  }, `${count} audits`, 60_000);
  return seen;
}

let pair: Pair;
let v3: V3Pair;
beforeAll(async () => {
  [pair, v3] = await Promise.all([startPair(), startV3Pair()]);
});
afterAll(async () => {
  await Promise.all([pair?.stop(), v3?.stop()]);
});

describe('v2 → v2 audit', () => {
  const S = () => pair.src.clientUrl;
  const D = () => pair.dst.clientUrl;
  const args = (extra: string[]) => ['--src-prefix', '/a', '--dst-prefix', '/a', '--strip', ...extra, S(), D()];

  it('finds, repairs and counts differences made on the destination beyond its history while the mirror was down', async () => {
    for (let i = 0; i < 10; i++) await ok(S(), 'PUT', `/a/k${i}`, { value: `v${i}` });
    await ok(S(), 'PUT', '/a/ttl', { value: 't', ttl: 600 });
    const m0 = await spawnMirror(args(['--reload', '--audit-interval', '0']));
    await m0.waitForState('tailing');
    await waitForIndex(pair.dstClient, '/__replication/a', await storeIndex(S()));
    expect((await m0.state()).audit).toBeNull();
    expect(await m0.kill('SIGTERM')).toBe(0);

    for (const i of [0, 1, 2]) await ok(D(), 'PUT', `/a/k${i}`, { value: 'changed on the destination' });
    for (const i of [3, 4]) await ok(D(), 'DELETE', `/a/k${i}`);
    for (const k of ['x1', 'x2']) await ok(D(), 'PUT', `/a/${k}`, { value: 'only on the destination' });
    await ok(D(), 'PUT', '/a/ttl', { value: 't', ttl: '', prevExist: true }); // the copy's TTL removed
    // Past the destination's 1000-event window: no watch from before could replay these changes.
    for (let i = 0; i < 1050; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => ok(D(), 'PUT', `/unrelated/${(i + j) % 7}`, { value: String(i + j) })));

    const m = await spawnMirror(args(['--audit-interval', '1']));
    const [first] = await nextAudits(m, 1);
    expect(first).toMatchObject({ differing: 8, repaired: 8, keys: 11 });
    expect(first!.atIndex).toBeGreaterThan(0);
    const warned = m.logs.find((l) => String(l.msg).startsWith('audit: the destination differs'));
    expect(warned?.keys).toEqual(
      expect.arrayContaining([
        ...['/a/k0', '/a/k1', '/a/k2'].map((key) => ({ key, kind: 'value' })),
        ...['/a/k3', '/a/k4'].map((key) => ({ key, kind: 'missing' })),
        ...['/a/x1', '/a/x2'].map((key) => ({ key, kind: 'extra' })),
        { key: '/a/ttl', kind: 'ttl' },
      ]),
    );
    await expectTreesEqual(pair.srcClient, '/a', pair.dstClient, '/a', { timeoutMs: 10_000 });
    const [after] = await nextAudits(m, 1);
    expect(after).toMatchObject({ differing: 0, repaired: 0, keys: 11, running: false });
    expect(Object.keys(after!).sort()).toEqual(['atIndex', 'differing', 'durationMs', 'keys', 'lastAt', 'nextAt', 'repaired', 'running']);
    const text = await m.metrics();
    expect(metric(text, 'etcdmirror_audit_runs_total{result="different"}')).toBe(1);
    expect(metric(text, 'etcdmirror_audit_runs_total{result="equal"}')).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'etcdmirror_audit_differences_total')).toBe(first!.differing);
    expect(metric(text, 'etcdmirror_audit_last_equal_timestamp_seconds')).toBeGreaterThan(0);
    expect(metric(text, 'etcdmirror_audit_keys')).toBe(11);
    expect(metric(text, 'etcdmirror_healed_total{reason="audit"}')).toBe(8);
    expect(await m.kill('SIGTERM')).toBe(0);
  });

  it('reports no differences under a bounded load of puts, deletes, TTL keys and directories, across a restart', async () => {
    // A few hundred operations/s (4 at a time, paced) until the audits are counted; bounded in any case.
    const op = (i: number) => {
      switch (i % 10) {
        case 6:
          return raw(S(), 'DELETE', `/a/load/${(i * 7) % 40}`);
        case 7:
          return raw(S(), 'PUT', `/a/exp/${i % 10}`, { value: String(i), ttl: 2 });
        case 8:
          return raw(S(), 'PUT', `/a/dir${i % 5}/x${i % 3}`, { value: String(i) });
        case 9:
          return raw(S(), 'DELETE', `/a/dir${(i * 3) % 5}`, { recursive: true });
        default:
          return raw(S(), 'PUT', `/a/load/${i % 40}`, { value: String(i) });
      }
    };
    let writing = true;
    let n = 0;
    const writer = (async () => {
      while (writing && n < 40_000) {
        await Promise.all(Array.from({ length: 4 }, () => op(n++)));
        await sleep(10);
      }
    })();
    const runs = async (m: MirrorProcess) => {
      const text = await m.metrics();
      const of = (result: string) => metric(text, `etcdmirror_audit_runs_total{result="${result}"}`) || 0;
      return { equal: of('equal'), different: of('different') };
    };
    const audited = async (m: MirrorProcess, equal: number) => {
      const r = await runs(m);
      return r.equal >= equal || r.different > 0 ? r : undefined;
    };
    try {
      const first = await spawnMirror(args(['--reload', '--audit-interval', '1']));
      const before = await waitFor(() => audited(first, 2), '2 audits before the restart', 60_000);
      expect(await first.kill('SIGTERM')).toBe(0);
      const second = await spawnMirror(args(['--audit-interval', '1']));
      const after = await waitFor(() => audited(second, 3), '3 audits after the restart', 60_000);
      const last = await auditOf(second);
      writing = false;
      await writer;
      // Named first: a difference would list its keys here.
      expect([first, second].flatMap((m) => m.logs.filter((l) => String(l.msg).startsWith('audit: the destination differs')))).toEqual([]);
      expect(before.different + after.different).toBe(0);
      expect(before.equal + after.equal).toBeGreaterThanOrEqual(5);
      expect(last).toMatchObject({ differing: 0, repaired: 0 });
      expect(n).toBeGreaterThan(100);
      // The TTL keys go while the mirror runs: the tests after this one find the trees equal.
      await ok(S(), 'DELETE', '/a/exp', { recursive: true });
      await waitForIndex(pair.dstClient, '/__replication/a', await storeIndex(S()));
      expect(await second.kill('SIGTERM')).toBe(0);
    } finally {
      writing = false;
      await writer;
    }
  });

  it('audit command: 0 when equal, 1 with the differing keys, 2 on bad flags', async () => {
    const cmd = (extra: string[] = []) => runMirror(['audit', ...args(extra)]);
    const equal = await cmd();
    expect(equal.stdout).toMatch(/^equal: \d+ keys compared at source index \d+/);
    expect(equal.code).toBe(0);
    await ok(D(), 'PUT', '/a/k5', { value: 'edited while no mirror runs' });
    const different = await cmd();
    expect(different.stdout).toMatch(/^DIFFERENT at source index \d+: 1 of \d+ keys\nvalue +\/a\/k5$/m);
    expect(different.code).toBe(1);
    expect((await runMirror(['audit', '--bogus', S(), D()])).code).toBe(2);
    expect((await runMirror(['audit', S()])).code).toBe(2);
  });
});

describe('v3 → v3 audit', () => {
  const V3 = ['--src-api', 'v3', '--dst-api', 'v3'];
  const args = (extra: string[]) => [...V3, '--src-prefix', '/c', '--dst-prefix', '/c', '--strip', ...extra, v3.src.clientUrl, v3.dst.clientUrl];
  const checkpoint = async () => Number((await v3.d.range(b('/__replication/c'))).kvs[0]?.value.toString() ?? -1);
  const caughtUp = async () => {
    const rev = (await v3.s.status()).revision;
    await waitFor(async () => (await checkpoint()) >= rev, `checkpoint ≥ ${rev}`);
  };
  const tree = async (c: V3Pair['s']) => Object.fromEntries([...(await v3Tree(c, '/c'))].map(([k, v]) => [k, `${v.value}${v.lease !== '0' ? ' (lease)' : ''}`]));

  it('finds, repairs and counts differences made on a compacted destination while the mirror was down', async () => {
    for (let i = 0; i < 10; i++) await v3.s.put(b(`/c/k${i}`), b(`v${i}`));
    const lease = await v3.s.leaseGrant(600);
    await v3.s.put(b('/c/ttl'), b('t'), { lease: lease.id });
    const m0 = await spawnMirror(args(['--reload', '--audit-interval', '0']));
    await m0.waitForState('tailing');
    await caughtUp();
    expect(await m0.kill('SIGTERM')).toBe(0);

    for (const i of [0, 1, 2]) await v3.d.put(b(`/c/k${i}`), b('changed on the destination'));
    for (const i of [3, 4]) await v3.d.deleteRange(b(`/c/k${i}`));
    for (const k of ['x1', 'x2']) await v3.d.put(b(`/c/${k}`), b('only on the destination'));
    const { revision } = await v3.d.put(b('/c/ttl'), b('t')); // the copy's lease removed
    await v3.d.compact(revision, true);

    const m = await spawnMirror(args(['--audit-interval', '1']));
    const [first] = await nextAudits(m, 1);
    expect(first).toMatchObject({ differing: 8, keys: 11 });
    expect(first!.repaired).toBe(8);
    const warned = m.logs.find((l) => String(l.msg).startsWith('audit: the destination differs'));
    expect(warned?.keys).toEqual(expect.arrayContaining([{ key: '/c/ttl', kind: 'ttl' }, { key: '/c/x1', kind: 'extra' }, { key: '/c/k3', kind: 'missing' }, { key: '/c/k0', kind: 'value' }]));
    await waitFor(async () => JSON.stringify(await tree(v3.d)) === JSON.stringify(await tree(v3.s)), 'trees equal', 10_000);
    const [after] = await nextAudits(m, 1);
    expect(after).toMatchObject({ differing: 0, keys: 11 });
    const text = await m.metrics();
    expect(metric(text, 'etcdmirror_audit_runs_total{result="different"}')).toBe(1);
    expect(metric(text, 'etcdmirror_audit_differences_total')).toBe(8);
    expect(metric(text, 'etcdmirror_audit_keys')).toBe(11);
    expect(await m.kill('SIGTERM')).toBe(0);
  });

  it('reports no differences while the source is written to, revisions split over several Txns included, and the audit command agrees', async () => {
    // Txns of 12 puts against 8 operations per destination Txn: those revisions are applied in two Txns.
    const m = await spawnMirror(args(['--audit-interval', '1', '--dst-max-txn-ops', '8']));
    await m.waitForState('tailing');
    let writing = true;
    let splitting = true;
    let n = 0;
    const writer = (async () => {
      while (writing && n < 20_000) {
        const i = n++;
        if (i % 20 === 19 && splitting) await v3.s.txn({ success: Array.from({ length: 12 }, (_, j) => ({ put: { key: b(`/c/grp/${j}`), value: b(String(i)) } })) });
        else if (i % 10 === 9) await v3.s.deleteRange(b(`/c/load/${(i * 7) % 40}`));
        else await v3.s.put(b(`/c/load/${i % 40}`), b(String(i)));
      }
    })();
    const audits = await nextAudits(m, 2);
    // The one-off command under the same writes: pinned at the replica's own index, exact. It reads the destination
    // as it is now, so not while a split revision is half applied.
    splitting = false;
    await caughtUp();
    const cmd = await runMirror(['audit', ...args([])]);
    audits.push(...(await nextAudits(m, 1)));
    writing = false;
    await writer;
    expect(audits.map((a) => a.differing)).toEqual([0, 0, 0]);
    expect(cmd.stdout).toMatch(/^equal: \d+ keys compared at source revision \d+/);
    expect(cmd.code).toBe(0);
    expect(metric(await m.metrics(), 'etcdmirror_split_revisions_total')).toBeGreaterThan(0);
    await m.kill('SIGTERM');
  });

  it('a copy on a lease that ran out by itself while no mirror ran is in flight, not a difference, once its source key is gone', async () => {
    const m = await spawnMirror(args(['--audit-interval', '0']));
    await m.waitForState('tailing');
    const lease = await v3.s.leaseGrant(3);
    await v3.s.put(b('/c/short'), b('s'), { lease: lease.id });
    await caughtUp();
    await m.kill('SIGKILL');
    // The copy outlives the source key by a margin; with no mirror, both run out. The stored checkpoint is from
    // before the source's expiry, which no mirror has applied.
    await waitFor(async () => (await v3.d.range(b('/c/short'))).kvs.length === 0, 'the copy ran out', 30_000);
    expect((await v3.s.range(b('/c/short'))).kvs).toEqual([]);
    const cmd = await runMirror(['audit', ...args([])]);
    expect(cmd.stdout).toMatch(/^equal: \d+ keys compared at source revision \d+/);
    expect(cmd.code).toBe(0);
  });
});

describe('v2 → v3 audit (the bridge)', () => {
  it('finds and repairs what changed on the destination while the mirror was down', async () => {
    const S = pair.src.clientUrl;
    const args = (extra: string[]) => ['--dst-api', 'v3', '--src-prefix', '/br', '--dst-prefix', '/br', '--strip', ...extra, S, v3.dst.clientUrl];
    for (let i = 0; i < 5; i++) await ok(S, 'PUT', `/br/k${i}`, { value: `v${i}` });
    await ok(S, 'PUT', '/br/ttl', { value: 't', ttl: 600 });
    const m0 = await spawnMirror(args(['--reload', '--audit-interval', '0']));
    await m0.waitForState('tailing');
    const index = await storeIndex(S);
    await waitFor(async () => Number((await v3.d.range(b('/__replication/br'))).kvs[0]?.value.toString() ?? -1) >= index, 'caught up');
    expect(await m0.kill('SIGTERM')).toBe(0);
    await v3.d.put(b('/br/k0'), b('changed on the destination'));
    await v3.d.put(b('/br/extra'), b('only on the destination'));
    await v3.d.put(b('/br/ttl'), b('t')); // the copy's lease removed

    const m = await spawnMirror(args(['--audit-interval', '1']));
    const [first] = await nextAudits(m, 1);
    expect(first).toMatchObject({ differing: 3, repaired: 3, keys: 6 });
    const [after] = await nextAudits(m, 1);
    expect(after).toMatchObject({ differing: 0, keys: 6 });
    const dst = await v3Tree(v3.d, '/br');
    expect(dst.get('/br/k0')?.value).toBe('v0');
    expect(dst.has('/br/extra')).toBe(false);
    expect(dst.get('/br/ttl')?.lease).not.toBe('0');
    expect(await m.kill('SIGTERM')).toBe(0);
  });
});
