// Bodies are decoded as UTF-8 across chunk boundaries: a local HTTP server answers like etcd (watch, stream, GET),
// writing each body in tiny pieces that split multi-byte characters; every value must come out byte for byte.
import { createServer, get as httpGet, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdClient } from '../../../src/etcd/v2/client.js';
import { parseEndpoint } from '../../../src/etcd/endpoint.js';

const CLUSTER = 'cafe0123456789ab';
/** Every answer claims a clock one hour ahead of ours: the client's estimate must follow the Date header. */
const SERVER_AHEAD_MS = 3_600_000;

// é (2 bytes), 漢 (3), 😀 (4), 🇫🇷 (two 4-byte regional indicators), a BOM inside a value, a combining accent.
const SPECIALS = ['é', '漢', '😀', '🇫🇷', '\uFEFF', 'e\u0301', 'ß', '€', '𝄞'];
const values = [
  SPECIALS.join(''),
  '\uFEFF' + '漢字😀🇫🇷é'.repeat(9), // a value that starts with U+FEFF: content, not a byte-order mark
  'line1\nline2 漢\n😀', // JSON escapes the newlines
  Array.from({ length: 40 }, (_, i) => SPECIALS[i % SPECIALS.length]).join(''),
];
/** A larger value, sent in pieces of a prime size so that almost every boundary falls inside a character. */
const big = Array.from({ length: 12_000 }, (_, i) => SPECIALS[(i * 7) % SPECIALS.length]).join('');

const event = (key: string, value: string, index: number): string =>
  JSON.stringify({ action: 'set', node: { key, value, modifiedIndex: index, createdIndex: index } });

/** Piece sizes cycled through while writing a body. */
let pieceSizes = [1, 2, 3, 5, 1, 7, 2];

/** Writes `body` in small pieces, each in its own TCP segment, letting the reader take each before the next. */
async function dribble(res: ServerResponse, body: Buffer, sizes: number[]): Promise<void> {
  for (let at = 0, i = 0; at < body.length; i++) {
    const n = sizes[i % sizes.length]!;
    res.write(body.subarray(at, at + n));
    at += n;
    await sleep(1);
  }
}

const etcdHeaders = (res: ServerResponse, index: number) => {
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('X-Etcd-Index', String(index));
  res.setHeader('X-Etcd-Cluster-Id', CLUSTER);
  res.setHeader('Date', new Date(Date.now() + SERVER_AHEAD_MS).toUTCString());
};

async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
  res.socket?.setNoDelay(true);
  const url = new URL(req.url ?? '/', 'http://x');
  const key = decodeURIComponent(url.pathname.replace(/^\/v2\/keys/, ''));
  const which = Number(key.split('/').pop()?.replace(/^k/, '') ?? 0);
  const value = key.includes('big') ? big : values[which] ?? '';
  if (url.searchParams.get('stream') === 'true') {
    // Stream: headers at once, then one JSON event per line, the pieces crossing characters and newlines.
    etcdHeaders(res, 100);
    res.writeHead(200);
    res.flushHeaders();
    const lines = values.map((v, i) => event(`/t/k${i}`, v, 101 + i));
    if (key.includes('big')) lines.push(event('/t/big', big, 101 + values.length));
    await dribble(res, Buffer.from(lines.map((l) => l + '\n').join(''), 'utf8'), key.includes('big') ? [997, 1, 3] : pieceSizes);
    res.end();
    return;
  }
  if (url.searchParams.get('wait') === 'true') {
    etcdHeaders(res, 41);
    res.writeHead(200);
    res.flushHeaders();
    await sleep(5);
    await dribble(res, Buffer.from(event(key, value, 42) + '\n', 'utf8'), key.includes('big') ? [997, 2, 1] : pieceSizes);
    res.end();
    return;
  }
  etcdHeaders(res, 42);
  res.writeHead(200);
  await dribble(res, Buffer.from(event(key, value, 42), 'utf8'), key.includes('big') ? [1009, 3] : pieceSizes);
  res.end();
}

let server: Server;
let base: string;
beforeAll(async () => {
  server = createServer((req, res) => void answer(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const newClient = () => new EtcdClient(parseEndpoint(base, 'test'), { connections: 4 });
const bytes = (s: string) => Buffer.from(s, 'utf8');

/** Control: reads the same answer with plain node:http, to show the pieces really arrive apart and split
 * characters (decoding each chunk on its own, as the client used to, corrupts the text). */
async function rawChunks(path: string): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    httpGet(`${base}${path}`, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(chunks));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('EtcdClient decodes bodies across chunk boundaries', () => {
  it('the test server really splits characters between chunks (control)', async () => {
    const chunks = await rawChunks('/v2/keys/t/k0?wait=true&waitIndex=42');
    expect(chunks.length).toBeGreaterThan(10);
    const whole = Buffer.concat(chunks).toString('utf8');
    expect(JSON.parse(whole).node.value).toBe(values[0]);
    expect(chunks.map((c) => c.toString('utf8')).join('')).not.toBe(whole); // per-chunk decoding breaks it
  });

  it('watch: every value byte for byte, header fields intact', async () => {
    const client = newClient();
    try {
      for (let i = 0; i < values.length; i++) {
        const ctl = new AbortController();
        const handle = await client.watch(`/t/k${i}`, { waitIndex: 42, signal: ctl.signal });
        expect(handle.etcdIndex).toBe(41);
        expect(handle.clusterId).toBe(CLUSTER);
        const ev = (await handle.event)!;
        expect(ev.node.key).toBe(`/t/k${i}`);
        expect(bytes(ev.node.value!).equals(bytes(values[i]!))).toBe(true);
        expect(ev.node.value).toBe(values[i]);
      }
      const ctl = new AbortController();
      const ev = (await (await client.watch('/t/big', { waitIndex: 42, signal: ctl.signal })).event)!;
      expect(bytes(ev.node.value!).equals(bytes(big))).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('stream: every event of the line-separated body byte for byte, in order', async () => {
    for (const path of ['/t', '/t/big']) {
      const client = newClient();
      try {
        const ctl = new AbortController();
        const stream = await client.stream(path, { recursive: true, signal: ctl.signal });
        expect(stream.etcdIndex).toBe(100);
        const expected = path.includes('big') ? [...values, big] : values;
        for (let i = 0; i < expected.length; i++) {
          const ev = await stream.next();
          expect(ev.node.modifiedIndex).toBe(101 + i);
          expect(bytes(ev.node.value!).equals(bytes(expected[i]!))).toBe(true);
        }
        expect(stream.lastIndex()).toBe(100 + expected.length);
        await expect(stream.next()).rejects.toThrow(/stream watch ended/); // the server ended the body
        ctl.abort();
      } finally {
        await client.close();
      }
    }
  });

  it('stream: one byte per chunk', async () => {
    const saved = pieceSizes;
    pieceSizes = [1];
    const client = newClient();
    try {
      const ctl = new AbortController();
      const stream = await client.stream('/t', { recursive: true, signal: ctl.signal });
      for (let i = 0; i < values.length; i++) expect((await stream.next()).node.value).toBe(values[i]);
      ctl.abort();
    } finally {
      pieceSizes = saved;
      await client.close();
    }
  });

  it('get (body collected, then decoded once): byte for byte', async () => {
    const client = newClient();
    try {
      for (let i = 0; i < values.length; i++) {
        const r = await client.get(`/t/k${i}`);
        expect(bytes(r.body.node.value!).equals(bytes(values[i]!))).toBe(true);
      }
      expect(bytes((await client.get('/t/big')).body.node.value!).equals(bytes(big))).toBe(true);
    } finally {
      await client.close();
    }
  });
});

describe('EtcdClient follows the cluster clock', () => {
  it('is our clock before the first answer, then the Date header of every answer (watch headers too)', async () => {
    const client = newClient();
    try {
      expect(client.clockOffsetMs()).toBe(0);
      const before = Date.now();
      expect(client.serverNow()).toBeGreaterThanOrEqual(before);
      expect(client.serverNow()).toBeLessThan(before + 1_000);
      const ctl = new AbortController();
      await client.watch('/t/k0', { waitIndex: 42, signal: ctl.signal }); // headers only: the event is not awaited
      ctl.abort();
      // One answer: the offset lies within a second (plus the round trip) of the truth.
      expect(Math.abs(client.clockOffsetMs() - SERVER_AHEAD_MS)).toBeLessThanOrEqual(1_100);
      expect(Math.abs(client.serverNow() - Date.now() - client.clockOffsetMs())).toBeLessThanOrEqual(50);
    } finally {
      await client.close();
    }
  });
});
