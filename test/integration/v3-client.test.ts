// The v3 gRPC client against real etcd 3.4.23: byte-exact KV, pinned paging, transactions, watches (one message per
// response, fragments merged, progress, compaction, resume after cuts and blackholes), leases, auth, TLS, failover.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { ClusterIdMismatchError, isRetryable } from '../../src/etcd/errors.js';
import { catchUpWatch } from '../../src/etcd/v3/catch-up.js';
import { V3Client, prefixEnd, type V3Event, type V3Watch, type WatchMessage } from '../../src/etcd/v3/client.js';
import { CompactedError, TooManyOpsError, V3AuthError, V3RequestError } from '../../src/etcd/v3/errors.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { enableV3Auth } from '../helpers/v3.js';

const b = (s: string): Buffer => Buffer.from(s);
const MiB = 1024 * 1024;

/** Puts `${prefix}${i}` for i in [from, from+count), `concurrency` at a time; returns the revisions, ascending. */
async function putMany(client: V3Client, prefix: string, from: number, count: number, concurrency = 8): Promise<number[]> {
  const revisions: number[] = [];
  let next = from;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < from + count) {
        const i = next++;
        revisions.push((await client.put(b(`${prefix}${i}`), b(`value ${i}`))).revision);
      }
    }),
  );
  return revisions.sort((x, y) => x - y);
}

/** Reads messages until `done` holds for all read so far; fails after a generous timeout instead of hanging. */
async function collect(it: AsyncIterator<WatchMessage>, done: (all: WatchMessage[]) => boolean, what: string, timeoutMs = 60_000): Promise<WatchMessage[]> {
  const all: WatchMessage[] = [];
  const deadline = Date.now() + timeoutMs;
  while (!done(all)) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), Math.max(0, deadline - Date.now()));
    });
    const r = await Promise.race([it.next(), timeout]).finally(() => clearTimeout(timer));
    if (r.done) throw new Error(`watch ended while waiting for ${what}`);
    all.push(r.value);
  }
  return all;
}

const eventsOf = (messages: WatchMessage[]): V3Event[] => messages.flatMap((m) => (m.kind === 'events' ? m.events : []));
const eventCount = (messages: WatchMessage[]): number => eventsOf(messages).length;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** Drains a watch until it throws; returns the error. */
async function watchFailure(watch: V3Watch): Promise<unknown> {
  return rejection(
    (async () => {
      for await (const _ of watch) {
        // only the failure matters
      }
    })(),
  );
}

const clusterOf = (url: string): ReturnType<typeof parseCluster> => parseCluster(url, 'test');

describe('prefixEnd', () => {
  it('increments the last byte below 0xff and drops trailing 0xff bytes', () => {
    expect(prefixEnd(b('a/'))).toEqual(b('a0'));
    expect(prefixEnd(b('abc'))).toEqual(b('abd'));
    expect(prefixEnd(Buffer.from([0x61, 0xff]))).toEqual(b('b'));
    expect(prefixEnd(Buffer.from([0x01, 0xfe, 0xff, 0xff]))).toEqual(Buffer.from([0x01, 0xff]));
    expect(prefixEnd(Buffer.from([0x00]))).toEqual(Buffer.from([0x01]));
  });
  it('is [0] ("every key from here on") for an empty or all-0xff prefix', () => {
    expect(prefixEnd(Buffer.alloc(0))).toEqual(Buffer.from([0]));
    expect(prefixEnd(Buffer.from([0xff, 0xff]))).toEqual(Buffer.from([0]));
  });
  it('does not modify its argument', () => {
    const prefix = b('x/');
    prefixEnd(prefix);
    expect(prefix).toEqual(b('x/'));
  });
});

describe('V3Client against etcd 3.4.23', () => {
  let etcd: EtcdProcess;
  let client: V3Client;

  beforeAll(async () => {
    etcd = await startEtcd({ name: 'v3', extraArgs: ['--experimental-watch-progress-notify-interval=500ms'] });
    client = new V3Client(clusterOf(etcd.clientUrl));
  });
  afterAll(async () => {
    await client?.close();
    await etcd?.stop();
  });

  it('status reports the revision, ids, version and db size', async () => {
    const before = await client.status();
    const { revision } = await client.put(b('status/k'), b('v'));
    const after = await client.status();
    expect(after.revision).toBe(revision);
    expect(revision).toBeGreaterThan(before.revision);
    expect(after.version).toBe('3.4.23');
    expect(after.clusterId).toMatch(/^[0-9a-f]+$/);
    expect(after.memberId).toMatch(/^[0-9a-f]+$/);
    expect(after.dbSize).toBeGreaterThan(0);
  });

  it('keys and values round-trip byte-exact: spaces, unicode, %, binary, empty and 1 MiB values', async () => {
    const cases: Array<[Buffer, Buffer]> = [
      [b('rt/with space'), b('a value with spaces ')],
      [b('rt/ünïcødé/日本語'), b('значение ✓')],
      [b('rt/100%/%41%zz'), b('%41%')],
      [b('rt/empty'), Buffer.alloc(0)],
      [Buffer.concat([b('rt/bin/'), Buffer.from([0x00, 0xff, 0x80, 0x0a])]), Buffer.from([0x00, 0xff, 0x00])],
      [b('rt/big'), randomBytes(MiB)],
    ];
    const start = (await client.status()).revision + 1;
    for (const [key, value] of cases) await client.put(key, value);
    for (const [key, value] of cases) {
      const { kvs, count } = await client.range(key);
      expect(count).toBe(1);
      expect(kvs[0]!.key.equals(key)).toBe(true);
      expect(kvs[0]!.value.equals(value)).toBe(true);
      expect(kvs[0]!.version).toBe(1);
      expect(kvs[0]!.lease).toBe('0');
    }
    const watch = client.watch(b('rt/'), prefixEnd(b('rt/')), { startRevision: start });
    const events = eventsOf(await collect(watch[Symbol.asyncIterator](), (m) => eventCount(m) >= cases.length, 'the round-trip events'));
    watch.close();
    expect(events.map((e) => [e.kv.key, e.kv.value])).toEqual(cases);
  });

  it('range honours limit, keysOnly, revision and reports more/count; deleteRange deletes a range', async () => {
    const revs = await putMany(client, 'rng/', 0, 5, 1);
    const limited = await client.range(b('rng/'), { rangeEnd: prefixEnd(b('rng/')), limit: 2 });
    expect(limited.kvs.map((kv) => kv.key.toString())).toEqual(['rng/0', 'rng/1']);
    expect(limited.more).toBe(true);
    expect(limited.count).toBe(5);
    const keysOnly = await client.range(b('rng/0'), { keysOnly: true });
    expect(keysOnly.kvs[0]!.value.length).toBe(0);
    await client.put(b('rng/0'), b('changed'));
    const old = await client.range(b('rng/0'), { revision: revs[0]! });
    expect(old.kvs[0]!.value.toString()).toBe('value 0');
    expect((await client.range(b('rng/0'), { serializable: true })).kvs[0]!.value.toString()).toBe('changed');

    const del = await client.deleteRange(b('rng/1'), b('rng/3'));
    expect(del.deleted).toBe(2);
    const rest = await client.range(b('rng/'), { rangeEnd: prefixEnd(b('rng/')) });
    expect(rest.kvs.map((kv) => kv.key.toString())).toEqual(['rng/0', 'rng/3', 'rng/4']);
    expect((await client.deleteRange(b('rng/nothing'))).deleted).toBe(0);
    expect((await client.deleteRange(b('rng/3'))).deleted).toBe(1); // one key, not every key from it on
    expect((await client.range(b('rng/'), { rangeEnd: prefixEnd(b('rng/')) })).count).toBe(2);
    expect((await client.range(b('rng/0'))).count).toBe(1);
  });

  it('txn: compares that hold run the success branch, others the failure branch', async () => {
    const { revision } = await client.put(b('txn/a'), b('1'));
    const ok = await client.txn({
      compare: [
        { key: b('txn/a'), target: 'mod', result: 'equal', value: revision },
        { key: b('txn/a'), target: 'value', result: 'equal', value: b('1') },
        { key: b('txn/a'), target: 'version', result: 'greater', value: 0 },
        { key: b('txn/missing'), target: 'create', result: 'equal', value: 0 },
        { key: b('txn/a'), target: 'lease', result: 'equal', value: '0' },
      ],
      success: [{ put: { key: b('txn/b'), value: b('2') } }, { range: { key: b('txn/a') } }, { deleteRange: { key: b('txn/a') } }],
      failure: [{ put: { key: b('txn/failed'), value: b('x') } }],
    });
    expect(ok.succeeded).toBe(true);
    expect(ok.revision).toBe(revision + 1);
    expect(ok.responses).toHaveLength(3);
    expect(ok.responses[0]).toEqual({});
    expect(ok.responses[1]!.range!.kvs[0]!.value.toString()).toBe('1');
    expect(ok.responses[2]!.deleted).toBe(1);

    const failed = await client.txn({
      compare: [{ key: b('txn/b'), target: 'value', result: 'not_equal', value: b('2') }],
      success: [{ put: { key: b('txn/never'), value: b('x') } }],
      failure: [{ range: { key: b('txn/'), rangeEnd: prefixEnd(b('txn/')) } }],
    });
    expect(failed.succeeded).toBe(false);
    expect(failed.revision).toBe(ok.revision); // a read-only branch writes nothing
    expect(failed.responses[0]!.range!.kvs.map((kv) => kv.key.toString())).toEqual(['txn/b']);
    expect((await client.range(b('txn/never'))).count).toBe(0);
  });

  it('a txn over --max-txn-ops is a TooManyOpsError, not retryable', async () => {
    const err = await rejection(client.txn({ success: Array.from({ length: 129 }, (_, i) => ({ put: { key: b(`ops/${i}`), value: b('x') } })) }));
    expect(err).toBeInstanceOf(TooManyOpsError);
    expect((err as TooManyOpsError).code).toBe('EM_ERR_V3_TOO_MANY_OPS');
    expect(isRetryable(err)).toBe(false);
  });

  it('rangeAll pages 2,500 keys at one pinned revision while writes land between the pages', async () => {
    await putMany(client, 'page/', 0, 2500);
    const writer = new V3Client(clusterOf(etcd.clientUrl));
    const writes: number[] = [];
    // Writes after every page, before the next one is read: deterministic interleaving.
    class WritingBetweenPages extends V3Client {
      override async range(...args: Parameters<V3Client['range']>): ReturnType<V3Client['range']> {
        const page = await super.range(...args);
        writes.push((await writer.put(b(`page/new-${writes.length}`), b('late'))).revision);
        writes.push((await writer.put(b('page/0'), b('overwritten'))).revision);
        writes.push((await writer.deleteRange(b(`page/${writes.length}`))).revision);
        return page;
      }
    }
    const scanner = new WritingBetweenPages(clusterOf(etcd.clientUrl));
    const pinnedBefore = (await client.status()).revision;
    const { revision, kvs } = await scanner.rangeAll(b('page/'), prefixEnd(b('page/')), { pageSize: 1000 });
    await Promise.all([scanner.close(), writer.close()]);

    expect(revision).toBe(pinnedBefore);
    expect(writes).toHaveLength(9); // three pages, each followed by writes
    expect(Math.min(...writes)).toBeGreaterThan(revision);
    expect(kvs).toHaveLength(2500);
    const keys = kvs.map((kv) => kv.key.toString());
    expect(new Set(keys).size).toBe(2500);
    expect(keys.every((k) => /^page\/\d+$/.test(k))).toBe(true);
    expect(kvs.every((kv) => kv.modRevision <= revision)).toBe(true);
    expect(kvs.find((kv) => kv.key.toString() === 'page/0')!.value.toString()).toBe('value 0');
    expect(keys).toEqual([...keys].sort((x, y) => Buffer.compare(b(x), b(y))));

    // An explicit revision pins every page, the first included.
    const again = await client.rangeAll(b('page/'), prefixEnd(b('page/')), { revision, pageSize: 700 });
    expect(again.revision).toBe(revision);
    expect(again.kvs.map((kv) => kv.key.toString())).toEqual(keys);
  });

  it('a txn of 40 puts and a delete arrives as ONE events message with all 41 events, prev_kv included', async () => {
    await client.put(b('batch/old'), b('old value'));
    const start = (await client.status()).revision + 1;
    const watch = client.watch(b('batch/'), prefixEnd(b('batch/')), { startRevision: start, prevKv: true });
    const it = watch[Symbol.asyncIterator]();
    const txn = await client.txn({
      success: [
        ...Array.from({ length: 40 }, (_, i) => ({ put: { key: b(`batch/${String(i).padStart(2, '0')}`), value: b(`v${i}`) } })),
        { deleteRange: { key: b('batch/old') } },
      ],
    });
    const [first] = await collect(it, (m) => m.length >= 1, 'the txn events');
    watch.close();
    expect(first!.kind).toBe('events');
    if (first!.kind !== 'events') return;
    expect(first!.events).toHaveLength(41);
    expect(first!.revision).toBe(txn.revision);
    expect(first!.events.every((e) => e.kv.modRevision === txn.revision)).toBe(true);
    expect(first!.events.filter((e) => e.type === 'put')).toHaveLength(40);
    const deletion = first!.events.find((e) => e.type === 'delete')!;
    expect(deletion.kv.key.toString()).toBe('batch/old');
    expect(deletion.prevKv!.value.toString()).toBe('old value');
  });

  it('merges fragments: four ~1 MiB revisions caught up in one response arrive once each, byte-exact', async () => {
    const values = Array.from({ length: 4 }, () => randomBytes(MiB - 1024));
    const revisions: number[] = [];
    for (const [i, value] of values.entries()) revisions.push((await client.put(b(`frag/${i}`), value)).revision);
    const watch = client.watch(b('frag/'), prefixEnd(b('frag/')), { startRevision: revisions[0]! });
    const messages = await collect(watch[Symbol.asyncIterator](), (m) => eventCount(m) >= 4, 'the four big events');
    watch.close();
    const events = eventsOf(messages);
    expect(events.map((e) => e.kv.modRevision)).toEqual(revisions);
    events.forEach((e, i) => expect(e.kv.value.equals(values[i]!)).toBe(true));
    // etcd sends a response over --max-request-bytes (1.5 MiB) with 2+ events only as fragments: one message
    // carrying more than that proves they were merged.
    const biggest = Math.max(...messages.map((m) => (m.kind === 'events' ? m.events.reduce((n, e) => n + e.kv.value.length, 0) : 0)));
    expect(biggest).toBeGreaterThan(1.5 * MiB);
  });

  it('progress notifications on a quiet prefix carry the advancing header revision; requestProgress asks for one', async () => {
    const start = (await client.status()).revision + 1;
    const watch = client.watch(b('quiet/'), prefixEnd(b('quiet/')), { startRevision: start });
    const it = watch[Symbol.asyncIterator]();
    const busy = await putMany(client, 'busy/', 0, 20, 1);
    const last = busy[busy.length - 1]!;
    const messages = await collect(it, (m) => m.some((x) => x.kind === 'progress' && x.revision >= last), 'a progress notification past the busy writes');
    expect(messages.every((m) => m.kind === 'progress')).toBe(true);
    const revisions = messages.map((m) => m.revision);
    expect(revisions).toEqual([...revisions].sort((x, y) => x - y));

    const more = (await client.put(b('busy/more'), b('x'))).revision;
    watch.requestProgress();
    await collect(it, (m) => m.some((x) => x.kind === 'progress' && x.revision >= more), 'a requested progress notification');
    watch.close();
  });

  it('close() ends a for-await loop cleanly', async () => {
    const watch = client.watch(b('closing/'), prefixEnd(b('closing/')), { startRevision: (await client.status()).revision + 1 });
    const seen: WatchMessage[] = [];
    const loop = (async () => {
      for await (const m of watch) seen.push(m);
      return 'ended';
    })();
    const { revision } = await client.put(b('closing/a'), b('1'));
    while (!seen.some((m) => m.kind === 'events')) await new Promise((r) => setTimeout(r, 20));
    watch.close();
    await expect(loop).resolves.toBe('ended');
    expect(eventsOf(seen).map((e) => e.kv.modRevision)).toEqual([revision]);
  });

  it('resumes after connection cuts, mid catch-up and live, delivering every revision exactly once in order', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(etcd.clientUrl).port) });
    const viaProxy = new V3Client(clusterOf(proxy.url));
    try {
      const start = (await client.status()).revision + 1;
      // 1,500 revisions before the watch: etcd catches up in batches of at most 1,000 revisions whose header
      // carries the store's revision, so resuming from header+1 after the first cut would skip 500 of them.
      const before = await putMany(client, 'cut/', 0, 1500);
      const watch = viaProxy.watch(b('cut/'), prefixEnd(b('cut/')), { startRevision: start });
      // Then 500 live writes in 4 chunks, each chunk cut halfway through its delivery (while it is being written).
      const chunk = 125;
      const writers: Promise<number[]>[] = [];
      const seen: number[] = [];
      let firstMessage: { revision: number; lastEvent: number } | undefined;
      let cuts = 0;
      // A watch that lost events would wait forever: end it after a generous bound and let the oracle report.
      const watchdog = setTimeout(() => watch.close(), 60_000);
      for await (const m of watch) {
        if (m.kind !== 'events') continue;
        for (const e of m.events) seen.push(e.kv.modRevision);
        if (!firstMessage) {
          firstMessage = { revision: m.revision, lastEvent: seen[seen.length - 1]! };
          proxy.cut();
          cuts++;
        }
        const live = seen.length - before.length;
        if (writers.length > 0 && cuts <= writers.length && live >= (writers.length - 0.5) * chunk) {
          proxy.cut();
          cuts++;
        }
        if (writers.length < 4 && live >= writers.length * chunk) writers.push(putMany(client, 'cut/', 1500 + writers.length * chunk, chunk));
        if (seen.length >= 2000) break;
      }
      clearTimeout(watchdog);
      const after = (await Promise.all(writers)).flat().sort((x, y) => x - y);
      expect(firstMessage!.revision).toBeGreaterThan(firstMessage!.lastEvent); // the header+1 trap was there
      expect(cuts).toBe(5);
      expect(seen).toEqual([...before, ...after]);
      for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
    } finally {
      await viaProxy.close();
      await proxy.close();
    }
  });

  it('catches a long backlog up through parallel slices: every revision of the prefix once, in order, then live', async () => {
    const start = (await client.status()).revision + 1;
    // A dense stretch, a stretch where the prefix takes one write in three (slices wider than etcd's batches), a
    // stretch of other keys only (a slice that hears nothing), then the prefix again.
    const dense = await putMany(client, 'slices/', 0, 2500);
    const mixed: number[] = [];
    for (let i = 0; i < 1500; i++) {
      const { revision } = await client.put(b(i % 3 === 0 ? `slices/m${i}` : `elsewhere/${i}`), b('x'));
      if (i % 3 === 0) mixed.push(revision);
    }
    await putMany(client, 'elsewhere/gap', 0, 2500);
    const after = await putMany(client, 'slices/late', 0, 1200);
    const backlog = [...dense, ...mixed, ...after];
    const opened: number[] = [];
    const watch = catchUpWatch((startRevision, last) => {
      opened.push(startRevision);
      return client.watch(b('slices/'), prefixEnd(b('slices/')), { startRevision, progressNotify: last });
    }, { from: start, stallMs: 300 });
    const seen: number[] = [];
    const it = watch[Symbol.asyncIterator]();
    await collect(it, (all) => eventCount(all) >= backlog.length, 'the backlog').then((all) => seen.push(...eventsOf(all).map((e) => e.kv.modRevision)));
    const live = (await client.put(b('slices/live'), b('1'))).revision;
    await collect(it, (all) => eventCount(all) >= 1, 'the live write').then((all) => seen.push(...eventsOf(all).map((e) => e.kv.modRevision)));
    watch.close();
    expect(seen).toEqual([...backlog, live]);
    expect(opened.length).toBeGreaterThan(2); // it did slice
  });

  it('a short backlog stays one watch', async () => {
    const start = (await client.status()).revision + 1;
    const backlog = await putMany(client, 'short/', 0, 300);
    const opened: number[] = [];
    const watch = catchUpWatch((startRevision, last) => {
      opened.push(startRevision);
      return client.watch(b('short/'), prefixEnd(b('short/')), { startRevision, progressNotify: last });
    }, { from: start });
    const all = await collect(watch[Symbol.asyncIterator](), (m) => eventCount(m) >= backlog.length, 'the backlog');
    watch.close();
    expect(eventsOf(all).map((e) => e.kv.modRevision)).toEqual(backlog);
    expect(opened).toEqual([start]);
  });

  it('leases: grant, keepalive, time-to-live, revoke (keys go), unknown leases and ids beyond 2^53', async () => {
    const lease = await client.leaseGrant(60);
    expect(lease.ttl).toBe(60);
    expect(lease.id).toMatch(/^[1-9]\d*$/);
    await client.put(b('lease/a'), b('leased'), { lease: lease.id });
    expect((await client.range(b('lease/a'))).kvs[0]!.lease).toBe(lease.id);

    const [ttl1, ttl2] = await Promise.all([client.leaseKeepAliveOnce(lease.id), client.leaseKeepAliveOnce(lease.id)]);
    expect(ttl1).toBe(60);
    expect(ttl2).toBe(60);
    const ttl = await client.leaseTimeToLive(lease.id);
    expect(ttl.grantedTtl).toBe(60);
    expect(ttl.ttl).toBeGreaterThan(0);
    expect(ttl.ttl).toBeLessThanOrEqual(60);

    expect((await client.leaseRevoke(lease.id)).revision).toBeGreaterThan(0); // the revision that deleted its keys
    expect((await client.range(b('lease/a'))).count).toBe(0);
    expect((await client.leaseTimeToLive(lease.id)).ttl).toBe(-1);
    await expect(client.leaseRevoke(lease.id)).resolves.toEqual({ revision: 0 }); // already gone: not an error
    expect(await client.leaseKeepAliveOnce(lease.id)).toBeLessThanOrEqual(0);

    const big = '9007199254740993'; // 2^53 + 1: not representable as a JS number
    const chosen = await client.leaseGrant(30, big);
    expect(chosen.id).toBe(big);
    await client.put(b('lease/big'), b('x'), { lease: big });
    expect((await client.range(b('lease/big'))).kvs[0]!.lease).toBe(big);
    expect(await client.leaseKeepAliveOnce(big)).toBe(30);
    await client.leaseRevoke(big);
  });

  // Last in this etcd: compaction removes the history earlier tests watched from.
  it('compaction: a watch or a Range at a compacted revision is a CompactedError naming the compaction revision', async () => {
    const revs = await putMany(client, 'comp/', 0, 3, 1);
    await client.compact(revs[2]!);

    const watchErr = await watchFailure(client.watch(b('comp/'), prefixEnd(b('comp/')), { startRevision: revs[0]! }));
    expect(watchErr).toBeInstanceOf(CompactedError);
    expect((watchErr as CompactedError).compactRevision).toBe(revs[2]);
    expect((watchErr as CompactedError).historyLost).toBe(true);
    expect((watchErr as CompactedError).code).toBe('EM_ERR_HISTORY_COMPACTED');
    expect(isRetryable(watchErr)).toBe(false);

    const rangeErr = await rejection(client.range(b('comp/0'), { revision: revs[1]! }));
    expect(rangeErr).toBeInstanceOf(CompactedError);
    expect((rangeErr as CompactedError).compactRevision).toBe(revs[2]);
    expect(isRetryable(rangeErr)).toBe(false);
    const scanErr = await rejection(client.rangeAll(b('comp/'), prefixEnd(b('comp/')), { revision: revs[0]! }));
    expect(scanErr).toBeInstanceOf(CompactedError);

    // The compaction revision itself is still readable, and compacting to it again is not an error.
    expect((await client.range(b('comp/2'), { revision: revs[2]! })).count).toBe(1);
    await expect(client.compact(revs[1]!)).resolves.toBeUndefined();
    const future = await rejection(client.range(b('comp/0'), { revision: revs[2]! + 1_000_000 }));
    expect(future).toBeInstanceOf(V3RequestError);
    expect(future).not.toBeInstanceOf(CompactedError);
  });
});

describe('failover between members', () => {
  let etcd: EtcdProcess;
  let other: EtcdProcess;
  let direct: V3Client;
  const proxies: FaultProxy[] = [];
  const clients: V3Client[] = [];

  const proxyToEtcd = async (): Promise<FaultProxy> => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(etcd.clientUrl).port) });
    proxies.push(proxy);
    return proxy;
  };
  const clientOf = (urls: string[], opts?: ConstructorParameters<typeof V3Client>[1]): V3Client => {
    const c = new V3Client(clusterOf(urls.join(',')), opts);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    [etcd, other] = await Promise.all([startEtcd({ name: 'v3-failover' }), startEtcd({ name: 'v3-other' })]);
    direct = new V3Client(clusterOf(etcd.clientUrl));
  });
  afterAll(async () => {
    await Promise.all([...clients, direct].map((c) => c?.close()));
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all([etcd?.stop(), other?.stop()]);
  });

  it('a member that refuses connections is skipped, for writes too (they were never sent)', async () => {
    const proxy = await proxyToEtcd();
    await proxy.close();
    const c = clientOf([proxy.url, etcd.clientUrl]);
    const { revision } = await c.put(b('fo/refused'), b('1'));
    const { kvs } = await direct.range(b('fo/refused'));
    expect(kvs[0]!.modRevision).toBe(revision);
    expect(kvs[0]!.version).toBe(1);
    expect((await c.range(b('fo/refused'))).count).toBe(1);
  });

  it('a blackholed member: a read fails over after its deadline; a write is not sent again and fails retryable', async () => {
    const proxy = await proxyToEtcd();
    const reader = clientOf([proxy.url, etcd.clientUrl], { requestTimeoutMs: 1_500 });
    await direct.put(b('fo/bh-read'), b('1'));
    await reader.status();
    proxy.blackhole(true);
    expect((await reader.range(b('fo/bh-read'))).count).toBe(1);

    const proxy2 = await proxyToEtcd();
    const writer = clientOf([proxy2.url, etcd.clientUrl], { requestTimeoutMs: 1_500 });
    await writer.status();
    proxy2.blackhole(true);
    const err = await rejection(writer.put(b('fo/bh-write'), b('x')));
    expect(err).toBeInstanceOf(V3RequestError);
    expect((err as V3RequestError).grpcCode).toBe(4); // DEADLINE_EXCEEDED
    expect(isRetryable(err)).toBe(true);
    expect((err as Error).message).toContain(proxy2.url);
    // Not re-sent to the healthy member; the blackhole swallowed the only copy.
    expect((await direct.range(b('fo/bh-write'))).count).toBe(0);
    // The next call goes to the next member.
    await writer.put(b('fo/bh-write'), b('second try'));
    expect((await direct.range(b('fo/bh-write'))).kvs[0]!.value.toString()).toBe('second try');
  });

  it('a watch on a blackholed connection notices (gRPC keepalive) and resumes on the next member', async () => {
    const proxy = await proxyToEtcd();
    // Pings every 6 s instead of 10 (etcd allows one every 5 s), given up after 2 s instead of 5: the same
    // keepalive notices the blackhole, sooner.
    const c = clientOf([proxy.url, etcd.clientUrl], { keepalive: { timeMs: 6_000, timeoutMs: 2_000 } });
    const start = (await direct.status()).revision + 1;
    const watch = c.watch(b('fo/w/'), prefixEnd(b('fo/w/')), { startRevision: start });
    const it = watch[Symbol.asyncIterator]();
    const first = await direct.put(b('fo/w/1'), b('1'));
    await collect(it, (m) => eventCount(m) >= 1, 'the event before the blackhole');
    proxy.blackhole(true);
    const second = await direct.put(b('fo/w/2'), b('2'));
    const rest = await collect(it, (m) => eventCount(m) >= 1, 'the event after the blackhole', 90_000);
    watch.close();
    expect(eventsOf(rest).map((e) => e.kv.modRevision)).toEqual([second.revision]);
    expect(second.revision).toBeGreaterThan(first.revision);
  });

  it('members of different clusters are refused once a failover reaches the stranger', async () => {
    const proxy = await proxyToEtcd();
    const c = clientOf([proxy.url, other.clientUrl]);
    await c.status();
    await proxy.close();
    const err = await rejection(c.status());
    expect(err).toBeInstanceOf(ClusterIdMismatchError);
    expect((err as Error).message).toContain(other.clientUrl);
  });
});

describe('v3 auth', () => {
  let etcd: EtcdProcess;
  const password = 'p@ss w%rd:secret!';
  const clients: V3Client[] = [];
  const clientAs = (user: string | undefined, pw = ''): V3Client => {
    const url = user === undefined ? etcd.clientUrl : etcd.clientUrl.replace('://', `://${encodeURIComponent(user)}:${encodeURIComponent(pw)}@`);
    const c = new V3Client(clusterOf(url));
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    etcd = await startEtcd({ name: 'v3-auth' });
    await enableV3Auth(etcd.clientUrl, { rootPassword: 'rootpw', users: [{ user: 'mirror', password, prefix: 'app/' }] });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await etcd?.stop();
  });

  it('a user with a password reads, writes and watches its prefix', async () => {
    const c = clientAs('mirror', password);
    const start = (await c.status()).revision + 1;
    const watch = c.watch(b('app/'), prefixEnd(b('app/')), { startRevision: start });
    const { revision } = await c.put(b('app/a'), b('1'));
    expect((await c.range(b('app/a'))).kvs[0]!.value.toString()).toBe('1');
    const messages = await collect(watch[Symbol.asyncIterator](), (m) => eventCount(m) >= 1, 'the authorised watch event');
    watch.close();
    expect(eventsOf(messages)[0]!.kv.modRevision).toBe(revision);
  });

  it('no permission, no credentials, or a wrong password: V3AuthError, never showing the password', async () => {
    const denied = await rejection(clientAs('mirror', password).range(b('elsewhere/')));
    expect(denied).toBeInstanceOf(V3AuthError);
    expect((denied as V3AuthError).code).toBe('EM_ERR_V3_AUTH');
    expect(isRetryable(denied)).toBe(false);

    expect(await rejection(clientAs(undefined).range(b('app/a')))).toBeInstanceOf(V3AuthError);

    const wrong = 'wrong-Pa55word';
    const err = await rejection(clientAs('mirror', wrong).range(b('app/a')));
    expect(err).toBeInstanceOf(V3AuthError);
    expect(isRetryable(err)).toBe(false);
    const text = `${(err as Error).message}\n${(err as Error).stack}`;
    expect((err as Error).message).toContain('"mirror"');
    expect((err as Error).message).toContain(etcd.clientUrl);
    expect(text).not.toContain(wrong);
    expect(text).not.toContain(encodeURIComponent(wrong));
    expect(text).not.toContain(password);
  });

  it('after a restart (simple tokens live in memory) calls and watches authenticate again and go on', async () => {
    const reader = clientAs('mirror', password);
    const watcher = clientAs('mirror', password);
    await reader.put(b('app/before'), b('1'));
    const start = (await watcher.status()).revision + 1;
    const watch = watcher.watch(b('app/'), prefixEnd(b('app/')), { startRevision: start });
    const it = watch[Symbol.asyncIterator]();
    const first = await reader.put(b('app/r1'), b('1'));
    await collect(it, (m) => eventCount(m) >= 1, 'the event before the restart');

    await etcd.restart();
    // The reader's token is unknown to the restarted member: one "invalid auth token", a new token, success.
    const second = await reader.put(b('app/r2'), b('2'));
    expect((await reader.range(b('app/r2'))).count).toBe(1);
    // The watcher re-created its watch with a token the member no longer knows ("permission denied"), then a new one.
    const rest = await collect(it, (m) => eventCount(m) >= 1, 'the event after the restart');
    watch.close();
    expect(eventsOf(rest).map((e) => e.kv.modRevision)).toEqual([second.revision]);
    expect(second.revision).toBeGreaterThan(first.revision);
  });
});

describe('v3 over TLS', () => {
  let pki: Pki;
  let etcd: EtcdProcess;
  let client: V3Client;

  beforeAll(async () => {
    pki = makePki();
    etcd = await startEtcd({
      name: 'v3-tls',
      tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: true, probeCertFile: pki.clientCert, probeKeyFile: pki.clientKey },
    });
    client = new V3Client(parseCluster(etcd.clientUrl, 'tls', { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) }));
  });
  afterAll(async () => {
    await client?.close();
    await etcd?.stop();
    pki?.cleanup();
  });

  it('speaks https with a custom CA and a client certificate', async () => {
    const { revision } = await client.put(b('tls/k'), b('over tls'));
    const { kvs } = await client.range(b('tls/k'));
    expect(kvs[0]!.modRevision).toBe(revision);
    expect(kvs[0]!.value.toString()).toBe('over tls');
    expect((await client.status()).revision).toBe(revision);
  });
});
