// etcd-mirror with --src-api v3 --dst-api v3 against real etcd processes: every write kind, atomic revisions,
// crash restarts, compaction, leases, quiet prefixes. Oracles are the destination's own event log and trees.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, runMirror, type MirrorProcess } from '../helpers/mirror.js';
import { b, record, rewoundValues, startV3Pair, v3Tree, values, waitFor, type V3Pair } from '../helpers/v3-pair.js';
import { followPresence } from '../helpers/oracle.js';

const V3 = ['--src-api', 'v3', '--dst-api', 'v3'];
const CHECKPOINT = '/__replication/conftool';

let pair: V3Pair;
beforeAll(async () => {
  pair = await startV3Pair();
});
afterAll(async () => {
  await pair?.stop();
});

async function mirror(extra: string[] = []): Promise<MirrorProcess> {
  return spawnMirror([...V3, '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', ...extra, pair.src.clientUrl, pair.dst.clientUrl]);
}

async function checkpoint(): Promise<number> {
  const { kvs } = await pair.d.range(b(CHECKPOINT));
  return kvs[0] ? Number(kvs[0].value.toString()) : -1;
}

/** The mirror has stored the source's current revision (everything up to now is on the destination). */
async function caughtUp(): Promise<number> {
  const rev = (await pair.s.status()).revision;
  return waitFor(async () => ((await checkpoint()) >= rev ? rev : undefined), `checkpoint ≥ ${rev}`);
}

async function treesEqual(): Promise<void> {
  await caughtUp();
  expect(values(await v3Tree(pair.d, '/conftool'))).toEqual(values(await v3Tree(pair.s, '/conftool')));
}

/** Every key of both clusters goes (range end "\0" from key "\0": the whole keyspace). */
async function wipe(): Promise<void> {
  const all = Buffer.from([0]);
  await Promise.all([pair.s.deleteRange(all, all), pair.d.deleteRange(all, all)]);
}

describe('v3 → v3: write kinds', () => {
  it('mirrors puts, overwrites, deletes, a >128-key range delete, transactions and odd keys byte-exactly; leaves /conftoolx and foreign keys alone', async () => {
    await wipe();
    await pair.d.put(b('/elsewhere/keep'), b('mine'));
    for (let i = 0; i < 20; i++) await pair.s.put(b(`/conftool/seed/${i}`), b(`s${i}`));
    const m = await mirror(['--reload']);
    await m.waitForState('tailing');
    const watch = record(pair.d, '/conftool', (await pair.d.status()).revision + 1);

    const big = Buffer.alloc(1024 * 1024, 7);
    await pair.s.put(b('/conftool/a'), b('1'));
    await pair.s.put(b('/conftool/a'), b('2'));
    await pair.s.put(b('/conftool/empty'), Buffer.alloc(0));
    await pair.s.put(b('/conftool/big'), big);
    await pair.s.put(b('/conftool/with space/ünïcødé/100%/漢字'), b('odd'));
    await pair.s.put(b('/conftoolx/not-mine'), b('x'));
    await pair.s.put(b('/conftool'), b('the prefix key itself'));
    await pair.s.deleteRange(b('/conftool/seed/1'));
    for (let i = 0; i < 300; i++) await pair.s.put(b(`/conftool/many/${String(i).padStart(3, '0')}`), b(String(i)));
    const txn = await pair.s.txn({
      success: [...Array.from({ length: 40 }, (_, i) => ({ put: { key: b(`/conftool/txn/${i}`), value: b('t') } })), { deleteRange: { key: b('/conftool/a') } }],
    });
    const rangeDelete = await pair.s.deleteRange(b('/conftool/many/'), b('/conftool/many0'));
    expect(rangeDelete.deleted).toBe(300);
    await treesEqual();

    const dstBig = (await pair.d.range(b('/conftool/big'))).kvs[0]!.value;
    expect(dstBig.equals(big)).toBe(true);
    expect((await pair.d.range(b('/conftool/empty'))).kvs[0]!.value.length).toBe(0);
    expect((await pair.d.range(b('/conftoolx/not-mine'))).kvs).toHaveLength(0);
    expect((await pair.d.range(b('/elsewhere/keep'))).kvs[0]!.value.toString()).toBe('mine');

    // Atomic: the source txn (40 puts + 1 delete) is one destination revision, and so is the 300-key range delete.
    await waitFor(async () => watch.log.some((r) => r.events.some((e) => e.type === 'delete' && e.kv.key.toString().startsWith('/conftool/many/'))), 'range delete on the destination');
    const byRevision = new Map<number, string[]>();
    for (const r of watch.log) for (const e of r.events) byRevision.set(e.kv.modRevision, [...(byRevision.get(e.kv.modRevision) ?? []), `${e.type} ${e.kv.key.toString()}`]);
    const txnRev = [...byRevision.values()].find((evs) => evs.some((e) => e === 'put /conftool/txn/0'))!;
    expect(txnRev.filter((e) => e.startsWith('put /conftool/txn/'))).toHaveLength(40);
    expect(txnRev).toContain('delete /conftool/a');
    const deleteRev = [...byRevision.values()].find((evs) => evs.some((e) => e === 'delete /conftool/many/000'))!;
    expect(deleteRev.filter((e) => e.startsWith('delete /conftool/many/'))).toHaveLength(300);
    expect(txn.succeeded).toBe(true);
    watch.stop();

    const metrics = await m.metrics();
    expect(metrics).toMatch(/etcdmirror_range_deletes_total 1/);
    expect(metrics).toMatch(/etcdmirror_event_wait_seconds_count [1-9]\d*/);
    // … and its own part of it (not the wait for the write before it), for the same events.
    expect(metrics.match(/etcdmirror_event_overhead_seconds_count (\d+)/)?.[1]).toBe(metrics.match(/etcdmirror_event_wait_seconds_count (\d+)/)?.[1]);
    const state = await m.state();
    expect(state.source).toMatchObject({ api: 'v3' });
    expect(state.destination).toMatchObject({ api: 'v3', indexKey: CHECKPOINT });
    expect(state.position).toBe('revision');
    expect(await m.kill('SIGTERM')).toBe(0);

    const verify = await runMirror(['verify', ...V3, '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', pair.src.clientUrl, pair.dst.clientUrl]);
    expect(verify.stdout).toMatch(/^equal: /);
    expect(verify.code).toBe(0);
  });
});

describe('v3 → v3: the destination\'s operation limit', () => {
  it('learns a lower limit from the destination, and splits (logged, counted) a revision larger than one Txn may carry', async () => {
    await wipe();
    // Configured above etcd's 128: batches of many revisions are refused and cut smaller.
    const m = await mirror(['--reload', '--dst-max-txn-ops', '1000', '--src-ignore-keys-regex', '/conftool/ignored/.*']);
    await m.waitForState('tailing');
    m.proc.kill('SIGSTOP');
    for (let i = 0; i < 400; i++) await pair.s.put(b(`/conftool/n/${i}`), b(String(i)));
    await pair.s.put(b('/conftool/ignored/x'), b('not mirrored'));
    m.proc.kill('SIGCONT');
    await caughtUp();
    const dst = values(await v3Tree(pair.d, '/conftool'));
    const src = values(await v3Tree(pair.s, '/conftool'));
    delete src['/conftool/ignored/x'];
    expect(dst).toEqual(src);
    await waitFor(async () => m.logs.find((l) => String(l.msg).includes('fewer operations per Txn')), 'limit learned');
    await m.kill('SIGTERM');

    // A limit below the source's transactions: a 40-put revision goes in several Txns.
    const small = await mirror(['--dst-max-txn-ops', '16']);
    await small.waitForState('tailing');
    await pair.s.txn({ success: Array.from({ length: 40 }, (_, i) => ({ put: { key: b(`/conftool/split/${i}`), value: b('s') } })) });
    await caughtUp();
    expect((await v3Tree(pair.d, '/conftool/split')).size).toBe(40);
    expect(await small.metrics()).toMatch(/etcdmirror_split_revisions_total 1/);
    expect(small.logs.some((l) => String(l.msg).includes('applied in several Txns'))).toBe(true);
    await small.kill('SIGTERM');
  });
});

describe('v3 → v3: crashes', () => {
  it('kill -9 under mixed load, restarted without --reload, three times: trees equal and the destination log in source revision order', async () => {
    await wipe();
    const m0 = await mirror(['--reload']);
    await m0.waitForState('tailing');
    await m0.kill('SIGTERM');
    const watch = record(pair.d, '/conftool', (await pair.d.status()).revision + 1);
    let seq = 0;
    let writing = true;
    // Values carry a global sequence taken in source revision order (one writer): the destination must see
    // them in increasing order, each once.
    const writer = (async () => {
      while (writing && seq < 20_000) {
        const n = seq++;
        const k = n % 7;
        if (k === 6) await pair.s.deleteRange(b(`/conftool/load/${(n * 13) % 50}`));
        else if (k === 5) await pair.s.txn({ success: [{ put: { key: b(`/conftool/t/${n % 11}`), value: b(String(n)) } }, { put: { key: b(`/conftool/u/${n % 5}`), value: b(String(n)) } }] });
        else await pair.s.put(b(`/conftool/load/${n % 50}`), b(String(n)));
      }
    })();
    for (let round = 0; round < 3; round++) {
      const m = await mirror();
      await m.waitForState('tailing');
      await waitFor(async () => (await checkpoint()) > 0 && seq > (round + 1) * 300, 'progress under load');
      await m.kill('SIGKILL');
    }
    writing = false;
    await writer;
    const m = await mirror();
    await m.waitForState('tailing');
    await treesEqual().catch(async (err: unknown) => {
      const [dt, st] = [values(await v3Tree(pair.d, '/conftool')), values(await v3Tree(pair.s, '/conftool'))];
      const diff = [...new Set([...Object.keys(dt), ...Object.keys(st)])].filter((k) => dt[k] !== st[k]).map((k) => `${k}: src ${st[k]} dst ${dt[k]}`);
      throw new Error(`${String(err)}; diff ${diff.join(', ')}; checkpoint ${await checkpoint()} exit ${m.proc.exitCode} ${m.stderr()}; logs ${JSON.stringify(m.logs.filter((l) => Number(l.level) >= 40))}`);
    });
    await m.kill('SIGTERM');
    watch.stop();
    // Consecutive source revisions share a destination Txn (only the last write of a key in it shows), so the
    // destination sees a subsequence of the source's writes: in increasing order, each at most once.
    const puts = watch.log.flatMap((r) => r.events.filter((e) => e.type === 'put'));
    const seen = puts.map((e) => Number(e.kv.value.toString()));
    expect(rewoundValues(watch.log, () => true)).toEqual([]);
    const writes = puts.map((e) => `${e.kv.key.toString()}=${e.kv.value.toString()}`);
    expect(new Set(writes).size).toBe(writes.length);
    expect(seen.length).toBeGreaterThan(50);
  });
});

describe('v3 → v3: compaction and quiet prefixes', () => {
  it('compaction past the stored revision while the mirror is down: recovers by itself, prunes deletes, never writes unchanged keys', async () => {
    await wipe();
    for (let i = 0; i < 30; i++) await pair.s.put(b(`/conftool/keep/${i}`), b(`k${i}`));
    for (let i = 0; i < 10; i++) await pair.s.put(b(`/conftool/gone/${i}`), b(`g${i}`));
    const m0 = await mirror(['--reload']);
    await m0.waitForState('tailing');
    await caughtUp();
    await m0.kill('SIGTERM');
    for (let i = 0; i < 10; i++) await pair.s.deleteRange(b(`/conftool/gone/${i}`));
    await pair.s.put(b('/conftool/keep/0'), b('changed'));
    await pair.s.put(b('/conftool/new'), b('n'));
    const { revision } = await pair.s.put(b('/elsewhere/x'), b('x'));
    await pair.s.compact(revision, true);
    const watch = record(pair.d, '/conftool', (await pair.d.status()).revision + 1);
    const m = await mirror();
    await m.waitForState('tailing', 30_000);
    await treesEqual();
    watch.stop();
    const written = watch.log.flatMap((r) => r.events.map((e) => `${e.type} ${e.kv.key.toString()}`));
    expect(written.filter((e) => e.startsWith('put /conftool/keep/') && e !== 'put /conftool/keep/0')).toEqual([]);
    expect(written).toContain('put /conftool/keep/0');
    expect(written.filter((e) => e.startsWith('delete /conftool/gone/'))).toHaveLength(10);
    const timeline = (await m.state()).timeline as { to: string }[];
    expect(timeline.map((t) => t.to)).toContain('recovering');
    expect(await m.metrics()).toMatch(/etcdmirror_faults_total\{code="EM_ERR_HISTORY_COMPACTED"\} 1/);
    await m.kill('SIGTERM');
  });

  it('a quiet prefix under a busy store follows the store revision; compaction at the current revision and a restart need no resync', async () => {
    await wipe();
    await pair.s.put(b('/conftool/quiet'), b('q'));
    const m = await mirror(['--reload', '--quiet-rearm-ms', '200']);
    await m.waitForState('tailing');
    let busy = true;
    const writer = (async () => {
      for (let i = 0; busy && i < 50_000; i++) await pair.s.put(b(`/busy/${i % 100}`), b(String(i)));
    })();
    const before = (await pair.s.status()).revision;
    await waitFor(async () => (await checkpoint()) > before + 200, 'checkpoint follows the busy store');
    busy = false;
    await writer;
    const { revision } = await pair.s.status();
    await waitFor(async () => (await checkpoint()) >= revision, 'checkpoint at the store revision');
    await pair.s.compact(revision, true);
    await m.kill('SIGKILL');
    const again = await mirror();
    await again.waitForState('tailing');
    await pair.s.put(b('/conftool/after'), b('a'));
    await treesEqual();
    const timeline = (await again.state()).timeline as { to: string }[];
    expect(timeline.map((t) => t.to)).not.toContain('recovering');
    await again.kill('SIGTERM');
  });
});

describe('v3 → v3: leases', () => {
  it('a leased key lives on the destination while the source lease is kept alive, and goes when it expires or is revoked', async () => {
    await wipe();
    const m = await mirror(['--reload']);
    await m.waitForState('tailing');
    const kept = await pair.s.leaseGrant(3);
    const revoked = await pair.s.leaseGrant(60);
    await pair.s.put(b('/conftool/lock/kept'), b('held'), { lease: kept.id });
    await pair.s.put(b('/conftool/lock/also-kept'), b('held'), { lease: kept.id });
    await pair.s.put(b('/conftool/lock/revoked'), b('held'), { lease: revoked.id });
    await caughtUp();
    const copies = await v3Tree(pair.d, '/conftool/lock');
    expect(copies.size).toBe(3);
    // One destination lease per source lease, shared by its keys.
    expect(copies.get('/conftool/lock/kept')!.lease).not.toBe('0');
    expect(copies.get('/conftool/lock/kept')!.lease).toBe(copies.get('/conftool/lock/also-kept')!.lease);
    // Kept alive on the source for three TTLs: the copies stay.
    const until = Date.now() + 9_000;
    while (Date.now() < until) {
      await pair.s.leaseKeepAliveOnce(kept.id);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect((await v3Tree(pair.d, '/conftool/lock')).has('/conftool/lock/kept')).toBe(true);
    await pair.s.leaseRevoke(revoked.id);
    await waitFor(async () => !(await v3Tree(pair.d, '/conftool/lock')).has('/conftool/lock/revoked'), 'revoked copy gone', 10_000);
    // No more keepalives: the source lease expires within its TTL, and the copies go.
    await waitFor(async () => (await v3Tree(pair.d, '/conftool/lock')).size === 0, 'expired copies gone', 15_000);
    await m.kill('SIGTERM');
  });

  it('a copy on a kept-alive lease is never absent while the source key exists, and goes after it (100 ms oracle)', async () => {
    await wipe();
    const m = await mirror(['--reload']);
    await m.waitForState('tailing');
    const key = b('/conftool/lock/held');
    const lease = await pair.s.leaseGrant(4);
    const oracle = followPresence({
      source: async () => (await pair.s.range(key)).kvs.length > 0,
      copy: async () => (await pair.d.range(key)).kvs.length > 0,
    });
    await pair.s.put(key, b('cookbook-1'), { lease: lease.id });
    // Kept alive every 300 ms for 6 s, then left to expire on the source.
    const until = Date.now() + 6_000;
    while (Date.now() < until) {
      await pair.s.leaseKeepAliveOnce(lease.id);
      await new Promise((r) => setTimeout(r, 300));
    }
    const seen = await oracle.untilGone();
    console.log(`v3 lease oracle: ${seen.polls} polls, widest gap ${seen.widestGapMs} ms`);
    expect(seen.appeared, 'the copy never appeared').toBe(true);
    expect(seen.early, 'the copy vanished while the source still had the key').toEqual([]);
    expect(seen.gone, 'the copy stayed after the source key went').toBe(true);
    await m.kill('SIGTERM');
  });
});

describe('v3 → v3: foreign changes on the destination', () => {
  it('restores keys someone else changed, deleted or created under the mirrored prefix', async () => {
    await wipe();
    for (let i = 0; i < 5; i++) await pair.s.put(b(`/conftool/h/${i}`), b(`v${i}`));
    const m = await mirror(['--reload']);
    await m.waitForState('tailing');
    await caughtUp();
    await pair.d.put(b('/conftool/h/0'), b('edited by hand'));
    await pair.d.deleteRange(b('/conftool/h/1'));
    await pair.d.put(b('/conftool/h/stray'), b('not on the source'));
    await pair.d.put(b('/conftoolx/foreign'), b('outside the prefix'));
    await waitFor(async () => {
      const t = values(await v3Tree(pair.d, '/conftool'));
      return JSON.stringify(t) === JSON.stringify(values(await v3Tree(pair.s, '/conftool')));
    }, 'destination healed');
    expect((await pair.d.range(b('/conftoolx/foreign'))).kvs).toHaveLength(1);
    expect(await m.metrics()).toMatch(/etcdmirror_healed_total\{reason="foreign change"\} [1-9]/);
    // Replication goes on after the heals.
    await pair.s.put(b('/conftool/h/0'), b('new'));
    await treesEqual();
    await m.kill('SIGTERM');
  });
});

describe('v3 → v3: outages', () => {
  it('a frozen source or destination stalls the mirror (not ready), and it carries on when they are back', async () => {
    await wipe();
    const m = await mirror(['--reload']);
    await m.waitForState('tailing');
    await pair.s.put(b('/conftool/before'), b('1'));
    await caughtUp();
    await pair.src.kill('SIGSTOP');
    try {
      expect((await m.waitForState('stalled', 30_000)).ready).toBe(false);
    } finally {
      await pair.src.kill('SIGCONT');
    }
    await pair.s.put(b('/conftool/after-source'), b('2'));
    await m.waitForState('tailing', 60_000);
    await treesEqual();
    await pair.dst.kill('SIGSTOP');
    try {
      await pair.s.put(b('/conftool/during-destination'), b('3'));
      await m.waitForState('stalled', 30_000);
    } finally {
      await pair.dst.kill('SIGCONT');
    }
    await m.waitForState('tailing', 60_000);
    await treesEqual();
    await m.kill('SIGTERM');
  });
});

describe('v3 command line', () => {
  it('refuses v3 → v2 with one line', async () => {
    const r = await runMirror(['--src-api', 'v3', '--dst-api', 'v2', pair.src.clientUrl, pair.dst.clientUrl]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/not supported/);
  });

  it('index get and set work on a v3 destination, checked against a v3 source', async () => {
    await wipe();
    const { revision } = await pair.s.put(b('/conftool/i'), b('1'));
    const set = await runMirror(['index', 'set', pair.dst.clientUrl, String(revision), ...V3, '--dst-prefix', '/conftool', '--src', pair.src.clientUrl]);
    expect(set.stderr).toBe('');
    expect(set.code).toBe(0);
    expect(await checkpoint()).toBe(revision);
    const get = await runMirror(['index', 'get', pair.dst.clientUrl, ...V3, '--dst-prefix', '/conftool', '--src', pair.src.clientUrl, '--json']);
    expect(JSON.parse(get.stdout)).toMatchObject({ indexKey: CHECKPOINT, stored: revision });
    const ahead = await runMirror(['index', 'set', pair.dst.clientUrl, String(revision + 1000), ...V3, '--dst-prefix', '/conftool', '--src', pair.src.clientUrl]);
    expect(ahead.code).toBe(2);
  });
});
