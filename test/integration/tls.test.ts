// https to etcd with a custom CA and client certificates; certificate problems are clear, non-retried errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import { makePki, type Pki } from '../helpers/certs.js';
import { runMirror, spawnMirror, startPair, waitForIndex, type Pair } from '../helpers/mirror.js';
import { expectTreesEqual } from '../helpers/tree.js';
import { EtcdClient } from '../../src/etcd/v2/client.js';
import { parseCluster } from '../../src/etcd/endpoint.js';
import { readFileSync } from 'node:fs';

let pki: Pki;
let secure: EtcdProcess;
let expired: EtcdProcess;
let pair: Pair;

beforeAll(async () => {
  pki = makePki();
  [secure, expired, pair] = await Promise.all([
    startEtcd({ name: 'tls', tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, clientCertAuth: true, probeCertFile: pki.clientCert, probeKeyFile: pki.clientKey } }),
    startEtcd({ name: 'expired', tls: { certFile: pki.expiredCert, keyFile: pki.expiredKey } }),
    startPair(),
  ]);
});
afterAll(async () => {
  await Promise.all([secure?.stop(), expired?.stop(), pair?.stop()]);
  pki?.cleanup();
});

describe('TLS', () => {
  it('mirrors from an https source with a custom CA and a client certificate', async () => {
    const tlsSrc = new EtcdClient(parseCluster(secure.clientUrl, 'src', { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) }));
    await tlsSrc.put('/sec/a', { value: 'over tls' });
    const m = await spawnMirror([
      '--reload', '--src-prefix', '/sec', '--dst-prefix', '/sec', '--strip',
      '--src-ca', pki.ca, '--src-cert', pki.clientCert, '--src-key', pki.clientKey,
      secure.clientUrl, pair.dst.clientUrl,
    ]);
    await m.waitForState('tailing');
    const last = await tlsSrc.put('/sec/b', { value: 'live' });
    await waitForIndex(pair.dstClient, '/__replication/sec', last.etcdIndex);
    await expectTreesEqual(tlsSrc, '/sec', pair.dstClient, '/sec');
    await m.kill('SIGTERM');
    await tlsSrc.close();
  });

  it('a wrong CA is a clear error and a non-zero exit, not an endless retry', async () => {
    await pair.dstClient.put('/__replication/sec2', { value: '1' });
    const r = await runMirror([
      '--port', '0', '--src-prefix', '/sec', '--dst-prefix', '/sec2', '--strip',
      '--src-ca', pki.otherCa, '--src-cert', pki.clientCert, '--src-key', pki.clientKey,
      secure.clientUrl, pair.dst.clientUrl,
    ], 20_000);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/TLS verification failed \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
  });

  it('an expired server certificate is a clear error', async () => {
    const r = await runMirror(['--reload', '--port', '0', '--src-prefix', '/x', '--dst-prefix', '/x', '--src-ca', pki.ca, expired.clientUrl, pair.dst.clientUrl], 20_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CERT_HAS_EXPIRED/);
  });

  it('an unreadable CA file is bad configuration (exit 2)', async () => {
    const r = await runMirror(['--src-ca', '/nonexistent/ca.pem', secure.clientUrl, pair.dst.clientUrl]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--src-ca: cannot read \/nonexistent\/ca.pem: ENOENT/);
  });
});
