// The int64 decoding shortcut in src/etcd/v3/proto.ts: values below 2^53 decode as numbers and reach the client
// as the same decimal strings as before; larger ids (leases, members) stay exact.
import { describe, expect, it } from 'vitest';
import { methodOf } from '../../../src/etcd/v3/proto.js';

describe('v3 proto int64 decoding', () => {
  it('gives exact decimal strings on both sides of 2^53', () => {
    const watch = methodOf('Watch', 'Watch');
    const bigLease = '7587869935641893478'; // etcd lease ids carry the member id in their top bits
    const bigMember = '17237436991929493444'; // uint64, above 2^63
    const kv = { key: Buffer.from('/k'), value: Buffer.from('v'), create_revision: '4294967297', mod_revision: String(2 ** 53 - 1), version: '3', lease: bigLease };
    const message = {
      header: { cluster_id: '14841639068965178418', member_id: bigMember, revision: '9007199254740993', raft_term: '0' },
      watch_id: '1',
      events: [{ type: 'PUT', kv, prev_kv: { ...kv, lease: '0', mod_revision: '12' } }],
    };
    const response = watch.responseDeserialize(watch.responseSerialize(message as never)) as {
      header: Record<string, string>;
      events: { kv: Record<string, unknown>; prev_kv: Record<string, unknown> }[];
      compact_revision: string;
    };
    expect(response.header).toMatchObject({ cluster_id: '14841639068965178418', member_id: bigMember, revision: '9007199254740993' });
    expect(response.events[0]!.kv).toMatchObject({ create_revision: '4294967297', mod_revision: '9007199254740991', version: '3', lease: bigLease });
    expect(response.events[0]!.prev_kv).toMatchObject({ lease: '0', mod_revision: '12' });
    expect(response.compact_revision).toBe('0');
  });
});
