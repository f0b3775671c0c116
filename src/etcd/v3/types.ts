// The v3 client's public shapes: keys and values as Buffers, revisions as numbers, lease ids as decimal strings.

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  version: number;
  /** Decimal lease id ('0' = none): int64 ids do not all fit in a JS number. */
  lease: string;
}

export interface V3Event {
  type: 'put' | 'delete';
  kv: KeyValue;
  prevKv?: KeyValue;
}

export type WatchMessage =
  /**
   * One watch response (fragments merged): never empty, and never splits a revision. `through`: this watch has
   * now delivered every event up to that revision (the header revision, unless the response is one of etcd's
   * catch-up batches cut at 1,000 revisions, whose header runs ahead of its events: then its last event's).
   */
  | { kind: 'events'; revision: number; events: V3Event[]; through: number; receivedAt?: number }
  /** A progress notification: the header revision of an empty response. */
  | { kind: 'progress'; revision: number };

export interface Compare {
  key: Buffer;
  target: 'create' | 'mod' | 'version' | 'value' | 'lease';
  result: 'equal' | 'greater' | 'less' | 'not_equal';
  /** A number for create/mod/version, a Buffer for value, a decimal lease id for lease. */
  value: number | Buffer | string;
}

export type TxnOp =
  | { put: { key: Buffer; value: Buffer; lease?: string } }
  | { deleteRange: { key: Buffer; rangeEnd?: Buffer } }
  | { range: { key: Buffer; rangeEnd?: Buffer } };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** One per operation of the branch taken: `range` for a range, `deleted` for a delete, empty for a put. */
  responses: Array<{ range?: { kvs: KeyValue[] }; deleted?: number }>;
}

export interface V3Watch extends AsyncIterable<WatchMessage> {
  /** Ask the server for a progress notification now (WatchProgressRequest); a no-op if the stream is not open. */
  requestProgress(): void;
  /** Ends the iteration (a for-await loop exits normally) and cancels the stream. */
  close(): void;
}

/** etcd's range_end for "every key starting with `prefix`"; [0] (all keys from `prefix` on) when none is shorter. */
export function prefixEnd(prefix: Buffer): Buffer {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i]! < 0xff) {
      const end = Buffer.from(prefix.subarray(0, i + 1));
      end[i] = prefix[i]! + 1;
      return end;
    }
  }
  return Buffer.from([0]);
}
