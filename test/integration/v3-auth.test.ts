// v3 → v3 with v3 auth on both clusters: the mirror exchanges user/password for tokens, replicates, and never
// shows a password (argv aside, which the password-file issue covers) in logs, /state, /metrics or /ui.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { V3Client } from '../../src/etcd/v3/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { spawnMirror } from '../helpers/mirror.js';
import { enableV3Auth } from '../helpers/v3.js';
import { b, v3Tree, values, waitFor } from '../helpers/v3-pair.js';

const SRC_PW = 'src-Secret%2F1';
const DST_PW = 'dst-Secret-2';
let src: EtcdProcess;
let dst: EtcdProcess;
let s: V3Client;
let d: V3Client;

beforeAll(async () => {
  [src, dst] = await Promise.all([startEtcd({ name: 'authsrc' }), startEtcd({ name: 'authdst' })]);
  await enableV3Auth(src.clientUrl, { rootPassword: 'root-src', users: [{ user: 'reader', password: 'src-Secret/1', prefix: '/conftool' }] });
  await enableV3Auth(dst.clientUrl, { rootPassword: 'root-dst', users: [{ user: 'writer', password: DST_PW, prefix: '/' }] });
  s = new V3Client(parseCluster(src.clientUrl.replace('//', '//root:root-src@'), 'src'));
  d = new V3Client(parseCluster(dst.clientUrl.replace('//', '//root:root-dst@'), 'dst'));
});
afterAll(async () => {
  await Promise.all([s?.close(), d?.close()]);
  await Promise.all([src?.stop(), dst?.stop()]);
});

describe('v3 auth', () => {
  it('replicates with user/password tokens on both sides, and no password shows anywhere the mirror speaks', async () => {
    for (let i = 0; i < 20; i++) await s.put(b(`/conftool/k${i}`), b(`v${i}`));
    const m = await spawnMirror([
      '--src-api', 'v3', '--dst-api', 'v3', '--reload', '-d', '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip',
      src.clientUrl.replace('//', `//reader:${SRC_PW}@`),
      dst.clientUrl.replace('//', `//writer:${DST_PW}@`),
    ]);
    await m.waitForState('tailing');
    await s.put(b('/conftool/live'), b('after the start'));
    await waitFor(async () => JSON.stringify(values(await v3Tree(d, '/conftool'))) === JSON.stringify(values(await v3Tree(s, '/conftool'))), 'trees equal');
    // The password is exchanged for a token once (that exchange is the bcrypt check); requests carry the token.
    const state = await m.waitForState((x) => {
      const a = x.auth as Record<string, { costMs: number | null }>;
      return a.source.costMs !== null && a.destination.costMs !== null;
    });
    const auth = state.auth as Record<string, Record<string, unknown>>;
    for (const side of ['source', 'destination']) {
      expect(auth[side]).toMatchObject({ auth: 'token', message: null, limiting: false });
      expect(auth[side]!.tokenExchangeMs as number).toBeGreaterThan(0);
    }
    console.log(`v3 auth: token exchange ${String(auth.source!.tokenExchangeMs)} / ${String(auth.destination!.tokenExchangeMs)} ms, then ${String(auth.source!.costMs)} / ${String(auth.destination!.costMs)} ms per request (source / destination)`);
    const base = `http://127.0.0.1:${m.port}`;
    const pages = await Promise.all(['/state', '/metrics', '/ui', '/lag', '/readyz'].map(async (p) => (await request(base + p)).body.text()));
    const seen = [JSON.stringify(m.logs), m.stderr(), ...pages].join('\n');
    for (const secret of ['src-Secret', 'dst-Secret', SRC_PW, DST_PW]) expect(seen).not.toContain(secret);
    expect(await m.kill('SIGTERM')).toBe(0);
  });
});
