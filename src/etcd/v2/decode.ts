// Pure decoding of /v2/keys answers into results or typed errors.
import { etcdErrorFrom, UnexpectedResponseError } from '../errors.js';

export interface EtcdNode {
  key: string;
  value?: string;
  dir?: boolean;
  /** RFC 3339, leader's wall clock; the only reliable TTL information (`ttl` in events is stale). */
  expiration?: string;
  ttl?: number;
  modifiedIndex: number;
  createdIndex: number;
  nodes?: EtcdNode[];
}

export interface EtcdEvent {
  action: string;
  node: EtcdNode;
  prevNode?: EtcdNode;
}

/** The v2 actions that remove a key or a directory (a TTL running out included). */
export const REMOVAL_ACTIONS: ReadonlySet<string> = new Set(['delete', 'expire', 'compareAndDelete']);
/** The v2 actions that write a key's value or a directory (a POST in-order key is a `create`). */
export const WRITE_ACTIONS: ReadonlySet<string> = new Set(['set', 'create', 'update', 'compareAndSwap']);

export interface KeysResult {
  /** X-Etcd-Index: the store index when the request was served (for a watch: when it was registered). */
  etcdIndex: number;
  clusterId: string | undefined;
  body: EtcdEvent;
}

export type Headers = Record<string, string | string[] | undefined>;

export function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export function parseIndex(raw: string | undefined, what: string): number {
  const n = raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) throw new UnexpectedResponseError(`invalid ${what}: ${JSON.stringify(raw)}`, 0, false);
  return n;
}

function parseJson(status: number, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    const snippet = text.slice(0, 80).replace(/\s+/g, ' ');
    throw new UnexpectedResponseError(`HTTP ${status} with a body that is not etcd JSON: ${JSON.stringify(snippet)}`, status, status >= 500);
  }
}

/** Throws the typed error if `status`/`text` is an etcd error or not an etcd answer at all. */
export function decodeKeys(status: number, headers: Headers, text: string): KeysResult {
  if (status === 301 || status === 307) {
    throw new UnexpectedResponseError(`etcd redirected the request (HTTP ${status} to ${header(headers, 'location') ?? '?'})`, status, false);
  }
  const json = parseJson(status, text) as Record<string, unknown>;
  if (typeof json !== 'object' || json === null) throw new UnexpectedResponseError(`HTTP ${status}: unexpected JSON`, status, false);
  if (typeof json.errorCode === 'number') {
    throw etcdErrorFrom(json as { errorCode: number; message?: string; cause?: string; index?: number }, status);
  }
  if (status >= 300 || typeof json.action !== 'string' || typeof json.node !== 'object') {
    throw new UnexpectedResponseError(`HTTP ${status}: not a /v2/keys answer`, status, status >= 500);
  }
  return {
    etcdIndex: parseIndex(header(headers, 'x-etcd-index'), 'X-Etcd-Index'),
    clusterId: header(headers, 'x-etcd-cluster-id'),
    body: json as unknown as EtcdEvent,
  };
}

/** Decodes one event line of a watch body. */
export function decodeEvent(line: string): EtcdEvent {
  const json = parseJson(200, line) as Record<string, unknown> | null;
  if (typeof json !== 'object' || json === null) throw new UnexpectedResponseError(`watch delivered something that is not an event: ${line.slice(0, 80)}`, 200, true);
  if (typeof json.errorCode === 'number') throw etcdErrorFrom(json as { errorCode: number }, 200);
  const node = json.node as EtcdNode | undefined;
  if (typeof json.action !== 'string' || !node || !Number.isSafeInteger(node.modifiedIndex)) {
    throw new UnexpectedResponseError(`watch delivered something that is not an event: ${line.slice(0, 80)}`, 200, true);
  }
  return json as unknown as EtcdEvent;
}
