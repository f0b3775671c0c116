// The backend-neutral parts of the v3-destination pipeline: byte key mapping, Txn batches, the hand-over channel.
import { describe, expect, it } from 'vitest';
import { subtreeRanges } from '../../src/replication/v3-destination.js';
import { KeyMap } from '../../src/replication/keys.js';
import { TxnBatch } from '../../src/replication/v3-writer.js';
import { Channel } from '../../src/replication/channel.js';
import { ByteKeyMap, coversKey, rangeOf } from '../../src/replication/keyspace.js';

const b = (s: string) => Buffer.from(s);
const s = (x: Buffer) => x.toString();

describe('ByteKeyMap', () => {
  it('covers a prefix on a path boundary: /conftool and /conftool/..., never /conftoolx', () => {
    expect(coversKey(b('/conftool'), b('/conftool'))).toBe(true);
    expect(coversKey(b('/conftool'), b('/conftool/a'))).toBe(true);
    expect(coversKey(b('/conftool'), b('/conftoolx'))).toBe(false);
    expect(coversKey(b('/conftool'), b('/conftool!'))).toBe(false);
    expect(coversKey(b('/'), b('/anything'))).toBe(true);
    expect(coversKey(b('/'), b('no-slash'))).toBe(false);
    const r = rangeOf(b('/conftool'));
    expect([s(r.key), s(r.rangeEnd)]).toEqual(['/conftool', '/conftool0']);
  });

  it('maps keys as the v2 KeyMap does, and back', () => {
    const cases: [string, string, boolean, string, string][] = [
      ['/conftool', '/replica', true, '/conftool/a/b', '/replica/a/b'],
      ['/conftool', '/replica', true, '/conftool', '/replica'],
      ['/conftool', '/replica', false, '/conftool/a', '/replica/conftool/a'],
      ['/', '/replica', true, '/a', '/replica/a'],
      ['/conftool', '/', true, '/conftool/a', '/a'],
      ['/', '/', true, '/a', '/a'],
    ];
    for (const [sp, dp, strip, src, dst] of cases) {
      const map = new KeyMap(sp, dp, strip, undefined);
      const keys = new ByteKeyMap(map);
      expect(s(keys.toDst(b(src)))).toBe(dst);
      expect(s(keys.toDst(b(src)))).toBe(map.toDst(src));
      expect(s(keys.toSrc(keys.toDst(b(src))))).toBe(src);
    }
  });

  it('leaves out other mirrors\' checkpoints and ignored keys, and owns no checkpoint', () => {
    const keys = new ByteKeyMap(new KeyMap('/', '/', true, /^\/skip\/.*$/));
    expect(keys.mirrors(b('/__replication/conftool'))).toBe(false);
    expect(keys.mirrors(b('/skip/x'))).toBe(false);
    expect(keys.mirrors(b('/keep'))).toBe(true);
    expect(keys.ownsDst(b('/__replication/__ROOT__'))).toBe(false);
    expect(s(keys.checkpointKey)).toBe('/__replication/__ROOT__');
    expect(s(new ByteKeyMap(new KeyMap('/', '/conftool', true, undefined)).checkpointKey)).toBe('/__replication/conftool');
    // --ha: the lock beside it, hidden and owned by no mirrored subtree.
    expect(new KeyMap('/', '/', true, undefined).lockKey).toBe('/__replication/__ROOT__.lock');
    expect(new KeyMap('/', '/conftool', true, undefined).lockKey).toBe('/__replication/conftool.lock');
    expect(keys.ownsDst(b('/__replication/__ROOT__.lock'))).toBe(false);
  });

  it('keeps non-UTF-8 key bytes as they are', () => {
    const keys = new ByteKeyMap(new KeyMap('/a', '/b', true, undefined));
    const raw = Buffer.concat([b('/a/'), Buffer.from([0xff, 0xfe, 0x00])]);
    expect(keys.toDst(raw).equals(Buffer.concat([b('/b/'), Buffer.from([0xff, 0xfe, 0x00])]))).toBe(true);
  });
});

describe('subtreeRanges', () => {
  it('is key/... for a key, and leaves the checkpoints out for /', () => {
    expect(subtreeRanges(b('/x')).map((r) => [s(r.key), s(r.rangeEnd)])).toEqual([['/x/', '/x0']]);
    expect(subtreeRanges(b('/')).map((r) => [s(r.key), s(r.rangeEnd)])).toEqual([
      ['/', '/__replication'],
      ['/__replication0', '0'],
    ]);
  });
});

describe('TxnBatch', () => {
  it('keeps only the last write of a key (one destination revision shows only the end state)', () => {
    const batch = new TxnBatch(128);
    expect(batch.tryAdd([{ kind: 'put', key: b('/k'), value: b('1') }])).toBe(true);
    expect(batch.tryAdd([{ kind: 'put', key: b('/j'), value: b('x') }])).toBe(true);
    expect(batch.tryAdd([{ kind: 'delete', key: b('/k') }])).toBe(true);
    expect(batch.tryAdd([{ kind: 'put', key: b('/k'), value: b('3') }])).toBe(true);
    expect(batch.writes().map((w) => `${w.kind} ${s(w.key)}${w.kind === 'put' ? '=' + s(w.value) : ''}`)).toEqual(['put /j=x', 'put /k=3']);
  });

  it('starts a new Txn rather than overlap a range delete with a key or another range', () => {
    const batch = new TxnBatch(128);
    expect(batch.tryAdd([{ kind: 'put', key: b('/d/a'), value: b('1') }])).toBe(true);
    expect(batch.tryAdd([{ kind: 'delete', key: b('/d/'), rangeEnd: b('/d0') }])).toBe(false);
    const other = new TxnBatch(128);
    expect(other.tryAdd([{ kind: 'delete', key: b('/d/'), rangeEnd: b('/d0') }])).toBe(true);
    expect(other.tryAdd([{ kind: 'put', key: b('/d/b'), value: b('1') }])).toBe(false);
    expect(other.tryAdd([{ kind: 'delete', key: b('/d/x/'), rangeEnd: b('/d/x0') }])).toBe(false);
    expect(other.tryAdd([{ kind: 'put', key: b('/e'), value: b('1') }])).toBe(true);
  });

  it('leaves one operation for the checkpoint and takes a change whole or not at all', () => {
    const batch = new TxnBatch(4);
    expect(batch.tryAdd([{ kind: 'put', key: b('/1'), value: b('') }, { kind: 'put', key: b('/2'), value: b('') }])).toBe(true);
    expect(batch.tryAdd([{ kind: 'put', key: b('/3'), value: b('') }, { kind: 'put', key: b('/4'), value: b('') }])).toBe(false);
    expect(batch.size).toBe(2);
    expect(batch.tryAdd([{ kind: 'put', key: b('/1'), value: b('again') }, { kind: 'put', key: b('/3'), value: b('') }])).toBe(true);
    expect(batch.size).toBe(3);
  });
});

describe('Channel', () => {
  it('hands items over in order, holds the producer at the high-water mark, and ends with the error', async () => {
    const ch = new Channel<number>(2);
    ch.push(1);
    ch.push(2);
    let roomy = false;
    const room = ch.room().then(() => (roomy = true));
    await Promise.resolve();
    expect(roomy).toBe(false);
    const it = ch[Symbol.asyncIterator]();
    expect((await it.next()).value).toBe(1);
    await room;
    expect(roomy).toBe(true);
    ch.push(3);
    ch.end(new Error('source gone'));
    expect((await it.next()).value).toBe(2);
    expect((await it.next()).value).toBe(3);
    await expect(it.next()).rejects.toThrow('source gone');
  });

  it('high-water 0 is lock-step: the producer gets room only once the consumer is done with the item before', async () => {
    const ch = new Channel<number>(0);
    let roomy = false;
    const it = ch[Symbol.asyncIterator]();
    const first = it.next();
    await ch.room(); // the consumer waits with nothing queued
    ch.push(1);
    expect((await first).value).toBe(1);
    const room = ch.room().then(() => (roomy = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(roomy).toBe(false); // the consumer is still on item 1
    const second = it.next();
    await room;
    expect(roomy).toBe(true);
    ch.push(2);
    expect((await second).value).toBe(2);
  });
});
