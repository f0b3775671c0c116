// Direct v2 requests for driving the SOURCE in tests: the operations a mirror must replay include
// preconditions, POST and refresh, which the product's client deliberately does not offer.
import { request } from 'undici';

export interface RawResult {
  status: number;
  etcdIndex: number;
  body: Record<string, unknown>;
}

const enc = (key: string) => key.split('/').map(encodeURIComponent).join('/');

export async function raw(
  baseUrl: string,
  method: 'GET' | 'PUT' | 'POST' | 'DELETE',
  key: string,
  params: Record<string, string | number | boolean> = {},
): Promise<RawResult> {
  const form = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const bodyMethods = method === 'PUT' || method === 'POST';
  const url = `${baseUrl}/v2/keys${enc(key)}${!bodyMethods && form.size ? `?${form}` : ''}`;
  const res = await request(url, {
    method,
    body: bodyMethods ? form.toString() : undefined,
    headers: bodyMethods ? { 'content-type': 'application/x-www-form-urlencoded' } : {},
  });
  const text = await res.body.text();
  return { status: res.statusCode, etcdIndex: Number(res.headers['x-etcd-index']), body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** Like raw() but throws unless the status is 2xx. */
export async function ok(baseUrl: string, method: 'GET' | 'PUT' | 'POST' | 'DELETE', key: string, params: Record<string, string | number | boolean> = {}): Promise<RawResult> {
  const r = await raw(baseUrl, method, key, params);
  if (r.status >= 300) throw new Error(`${method} ${key} ${JSON.stringify(params).slice(0, 100)} → ${r.status} ${JSON.stringify(r.body)}`);
  return r;
}

/** Current store index of a cluster. */
export async function storeIndex(baseUrl: string): Promise<number> {
  return (await raw(baseUrl, 'GET', '/')).etcdIndex;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Calls `write(i)` for i = 0 … n-1, `concurrency` at a time: for bulk writes whose order does not matter (etcd then
 * syncs its log once for several of them instead of once each).
 */
export async function writeMany(n: number, write: (i: number) => Promise<unknown>, concurrency = 8): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await write(next++);
    }),
  );
}
