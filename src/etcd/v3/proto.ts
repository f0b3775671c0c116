// etcd's rpc.proto, loaded on first use, and the messages as proto-loader decodes them, converted to and from the
// client's shapes (types.ts).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { KeyValue, TxnOp, V3Event } from './types.js';

// protobufjs decodes every int64 into a Long object, which proto-loader's `longs: String` then turns into a decimal
// string by long division: per watched event, a dozen objects and strings of garbage. Values below 2^53 (every
// revision, version and count) decode as plain numbers instead, as protobufjs does when no Long class is present;
// the conversion to a string is then String(n). Lease and member ids above 2^53 keep their exact Long path.
// The ids that stay Longs (the cluster and member id in every response's header, lease ids) repeat: their strings
// are remembered.
const { LongBits, Long } = protobuf.util;
const toLong = LongBits.prototype.toLong;
LongBits.prototype.toLong = function toSafeNumberOrLong(this: protobuf.util.LongBits, unsigned?: boolean) {
  return this.hi < 0x200000 ? (this.toNumber(unsigned) as never) : toLong.call(this, unsigned);
};
const longToString = Long.prototype.toString as (this: protobuf.Long, radix?: number) => string;
const idStrings = new Map<number, Map<number, string>>();
let idStringCount = 0;
Long.prototype.toString = function rememberedToString(this: protobuf.Long, radix?: number): string {
  if (radix !== undefined && radix !== 10) return longToString.call(this, radix);
  const key = this.unsigned ? this.high + 2 ** 32 : this.high; // unsigned and signed Longs of the same bits differ
  let lows = idStrings.get(key);
  let s = lows?.get(this.low);
  if (s !== undefined) return s;
  s = longToString.call(this);
  if (++idStringCount > 4096) {
    idStrings.clear();
    idStringCount = 1;
    lows = undefined;
  }
  if (!lows) idStrings.set(key, (lows = new Map()));
  lows.set(this.low, s);
  return s;
};

const PROTO_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }; // bytes: Buffer by default

/** The source tree's rpc.proto, found upwards from this file: in src/etcd/v3/, dist/src/etcd/v3/ or, bundled,
 * dist/src/bundle/ (the package ships src/etcd/v3/proto beside dist/). */
function protoFile(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    const file = join(dir, 'src/etcd/v3/proto/rpc.proto');
    if (existsSync(file)) return file;
  }
  return fileURLToPath(new URL('./proto/rpc.proto', import.meta.url)); // not found: the loader says which file
}

export type Service = 'KV' | 'Watch' | 'Lease' | 'Maintenance' | 'Auth';
export type Method = protoLoader.MethodDefinition<object, object>;
let definitions: protoLoader.PackageDefinition | undefined;

export function methodOf(service: Service, name: string): Method {
  definitions ??= protoLoader.loadSync(protoFile(), PROTO_OPTIONS);
  const method = (definitions[`etcdserverpb.${service}`] as protoLoader.ServiceDefinition | undefined)?.[name];
  if (!method) throw new Error(`etcdserverpb.${service}/${name} missing from rpc.proto`);
  return method;
}
// Messages as proto-loader decodes them (snake_case, int64 as decimal strings, bytes as Buffers, defaults set).
export interface RawHeader { cluster_id: string; member_id: string; revision: string }
export interface RawKeyValue { key: Buffer; value: Buffer; create_revision: string; mod_revision: string; version: string; lease: string }
export interface RawEvent { type: string; kv: RawKeyValue | null; prev_kv: RawKeyValue | null }
export interface RawRangeResponse { header: RawHeader | null; kvs: RawKeyValue[]; more: boolean; count: string }
export interface RawWatchResponse {
  header: RawHeader | null;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  fragment: boolean;
  events: RawEvent[];
}
export interface RawResponseOp {
  response: 'response_range' | 'response_put' | 'response_delete_range' | 'response_txn';
  response_range: RawRangeResponse | null;
  response_delete_range: { deleted: string } | null;
}

export function keyValueOf(raw: RawKeyValue): KeyValue {
  return {
    key: raw.key,
    value: raw.value,
    createRevision: Number(raw.create_revision),
    modRevision: Number(raw.mod_revision),
    version: Number(raw.version),
    lease: raw.lease,
  };
}

export function eventOf(raw: RawEvent): V3Event {
  const event: V3Event = { type: raw.type === 'Delete' ? 'delete' : 'put', kv: keyValueOf(raw.kv!) };
  if (raw.prev_kv) event.prevKv = keyValueOf(raw.prev_kv);
  return event;
}

export const COMPARE_TARGET = { version: 0, create: 1, mod: 2, value: 3, lease: 4 } as const;
export const COMPARE_RESULT = { equal: 0, greater: 1, less: 2, not_equal: 3 } as const;
export const COMPARE_FIELD = { version: 'version', create: 'create_revision', mod: 'mod_revision', value: 'value', lease: 'lease' } as const;

/**
 * The key fields of a request. An absent range_end means one key; an empty one, sent, means "every key from `key`
 * on" to a Range served without raft (etcd tells nil from empty there), so an empty range_end is never sent.
 */
export function keyRange(key: Buffer, rangeEnd: Buffer | undefined): { key: Buffer; range_end?: Buffer } {
  return rangeEnd && rangeEnd.length > 0 ? { key, range_end: rangeEnd } : { key };
}

export function requestOpOf(op: TxnOp): object {
  if ('put' in op) return { request_put: { key: op.put.key, value: op.put.value, lease: op.put.lease ?? '0' } };
  if ('deleteRange' in op) return { request_delete_range: keyRange(op.deleteRange.key, op.deleteRange.rangeEnd) };
  return { request_range: keyRange(op.range.key, op.range.rangeEnd) };
}
