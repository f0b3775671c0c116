// Large multi-byte values cross the mirror byte for byte: live through the stream watch, and after a stop through
// history long-polls. (Chunks of a body end anywhere, also inside a character: decoding each one on its own
// turned split characters into U+FFFD on the replica.)
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, raw, storeIndex } from '../helpers/raw.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { rng } from '../helpers/workload.js';

const VALUES = 240;
const WRITERS = 24;
const MIN_BYTES = 2 * 1024;
const MAX_BYTES = 200 * 1024;
const INDEX_KEY = '/__replication/bytes-replica';
const ARGS = (src: string, dst: string) => ['--src-prefix', '/bytes', '--dst-prefix', '/bytes-replica', '--strip', src, dst];

// 2-, 3- and 4-byte characters, regional-indicator flags, a combining accent, U+FEFF and U+2028 (which Go's
// JSON encoder escapes), and a few ASCII characters that need escaping in JSON or in a form body.
const ALPHABET = ['é', 'Ж', 'ع', 'ß', '漢', '字', '€', '\u2028', '\uFEFF', '😀', '𝄞', '🇫🇷', '🇯🇵', 'e\u0301', '<', '&', '%', '+', '"', '\\', ' '];
const ALPHABET_BYTES = ALPHABET.map((c) => Buffer.byteLength(c, 'utf8'));

function makeValue(random: () => number, targetBytes: number): string {
  const parts: string[] = [];
  let size = 0;
  while (size < targetBytes) {
    const i = Math.floor(random() * ALPHABET.length);
    parts.push(ALPHABET[i]!);
    size += ALPHABET_BYTES[i]!;
  }
  return parts.join('');
}

/** Writes VALUES fresh keys under `dir` with WRITERS concurrent writers; returns the UTF-8 bytes sent per key. */
async function writeValues(baseUrl: string, dir: string, seed: number): Promise<Map<string, Buffer>> {
  const random = rng(seed);
  const jobs = Array.from({ length: VALUES }, (_, i) => ({
    key: `/bytes/${dir}/v${String(i).padStart(3, '0')}`,
    value: makeValue(random, MIN_BYTES + Math.floor(random() * (MAX_BYTES - MIN_BYTES + 1))),
  }));
  const sent = new Map<string, Buffer>();
  let next = 0;
  await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      while (next < jobs.length) {
        const { key, value } = jobs[next++]!;
        const res = await request(`${baseUrl}/v2/keys${key}`, {
          method: 'PUT',
          body: new URLSearchParams({ value }).toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        const text = await res.body.text();
        if (res.statusCode !== 201) throw new Error(`PUT ${key}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
        // etcd answers with the stored node: it took the value byte for byte.
        expect(Buffer.from((JSON.parse(text) as { node: { value: string } }).node.value, 'utf8').equals(Buffer.from(value, 'utf8'))).toBe(true);
        sent.set(key, Buffer.from(value, 'utf8'));
      }
    }),
  );
  return sent;
}

/** Value of `key` as UTF-8 bytes, read with plain undici (not the product's client). */
async function valueBytes(baseUrl: string, key: string): Promise<Buffer> {
  const r = await raw(baseUrl, 'GET', key);
  if (r.status !== 200) throw new Error(`GET ${key}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  return Buffer.from((r.body.node as { value: string }).value, 'utf8');
}

/** Every destination copy equals the source value and what the writer sent; returns the keys that differ. */
async function mismatches(pair: Pair, sent: Map<string, Buffer>): Promise<string[]> {
  const bad: string[] = [];
  const keys = [...sent.keys()];
  // Eight keys at a time: every key is still read from both sides.
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let key = keys.pop(); key !== undefined; key = keys.pop()) {
        const bytes = sent.get(key)!;
        const dstKey = key.replace(/^\/bytes\//, '/bytes-replica/');
        const [src, dst] = await Promise.all([valueBytes(pair.src.clientUrl, key), valueBytes(pair.dst.clientUrl, dstKey)]);
        if (!src.equals(bytes) || !dst.equals(bytes)) bad.push(`${key} (${bytes.length} bytes sent, source ${src.length}, destination ${dst.length})`);
      }
    }),
  );
  return bad.sort();
}

let pair: Pair;
beforeAll(async () => {
  pair = await startPair();
});
afterAll(async () => {
  await pair?.stop();
});

describe('multi-byte values of 2–200 KB', () => {
  it('arrive byte for byte while the mirror tails, and after a restart from history', async () => {
    const S = pair.src.clientUrl;
    const D = pair.dst.clientUrl;
    await ok(S, 'PUT', '/bytes/marker', { value: 'before the mirror started' });
    const mirrors: MirrorProcess[] = [];
    try {
      const m = await spawnMirror(['--reload', ...ARGS(S, D)]);
      mirrors.push(m);
      await m.waitForState('tailing');
      // The live stream is registered once the reload is through: the marker's index is stored.
      await waitForIndex(pair.dstClient, INDEX_KEY, await storeIndex(S), 60_000);

      // (i) Live: written while the mirror tails the source.
      const live = await writeValues(S, 'live', 1);
      await waitForIndex(pair.dstClient, INDEX_KEY, await storeIndex(S), 120_000);
      expect(await mismatches(pair, live)).toEqual([]);
      expect(await m.kill('SIGTERM')).toBe(0);

      // (ii) Catch-up: written while the mirror is stopped; restarted without --reload, it reads them from history
      // (240 events, well inside the 1000-event window), so neither a snapshot nor a reconcile is involved.
      const stored = Number((await pair.dstClient.get(INDEX_KEY)).body.node.value);
      const catchup = await writeValues(S, 'catchup', 2);
      expect((await storeIndex(S)) - stored).toBeLessThan(1000);
      const again = await spawnMirror(ARGS(S, D));
      mirrors.push(again);
      await waitForIndex(pair.dstClient, INDEX_KEY, await storeIndex(S), 120_000);
      expect(await mismatches(pair, catchup)).toEqual([]);
      expect(again.logs.some((l) => l.to === 'outOfWindow' || l.to === 'recovering' || l.to === 'reloading')).toBe(false);
      expect(await mismatches(pair, live)).toEqual([]);
      await expectTreesEqual(pair.srcClient, '/bytes', pair.dstClient, '/bytes-replica');
      expect(await again.kill('SIGTERM')).toBe(0);
    } finally {
      await Promise.all(mirrors.map((p) => p.kill('SIGKILL')));
    }
  });
});
