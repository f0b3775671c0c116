// The one place where etcd key paths and request URLs are built. Keys are arbitrary strings except '/';
// every segment is percent-encoded, and paths that etcd would answer with a 301 ('//', '.', '..') are refused,
// because a redirected PUT or DELETE is silently not performed.
import { InvalidKeyError } from '../errors.js';

/** Splits a key into its segments; '/' is the root (no segments). A single trailing '/' is tolerated. */
export function keySegments(key: string): string[] {
  if (!key.startsWith('/')) throw new InvalidKeyError(`key must be absolute: ${JSON.stringify(key)}`);
  if (key === '/') return [];
  const trimmed = key.endsWith('/') ? key.slice(0, -1) : key;
  const segments = trimmed.slice(1).split('/');
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..') throw new InvalidKeyError(`key has an empty or dot segment: ${JSON.stringify(key)}`);
  }
  return segments;
}

/** Canonical form: leading '/', no trailing '/', root is '/'. */
export function normalizeKey(key: string): string {
  return '/' + keySegments(key).join('/');
}

/** Joins a base key and a relative tail ('' or '/a/b'), never producing '//'. */
export function joinKey(base: string, tail: string): string {
  const b = base === '/' ? '' : base.replace(/\/+$/, '');
  const joined = b + tail;
  return joined === '' ? '/' : joined;
}

/** True when `key` is `ancestor` itself or lies beneath it (segment-wise, not string-prefix). */
export function isWithin(key: string, ancestor: string): boolean {
  if (ancestor === '/') return true;
  return key === ancestor || key.startsWith(ancestor + '/');
}

/** A path segment starting with '_' below `base` makes a key hidden for etcd's recursive GETs and live watches. */
export function isHiddenBelow(key: string, base: string): boolean {
  const rest = base === '/' ? key : key.slice(base.length);
  return rest.split('/').some((s) => s.startsWith('_'));
}

export type Query = Record<string, string | number | boolean | undefined>;

export function keysPath(key: string, query: Query = {}): string {
  const encoded = keySegments(key).map(encodeURIComponent).join('/');
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.set(k, String(v));
  const q = qs.toString();
  return `/v2/keys/${encoded}${q ? `?${q}` : ''}`;
}
