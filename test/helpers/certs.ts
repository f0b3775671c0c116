// Throw-away PKI for TLS tests, made with the system's openssl: a CA, a server certificate for 127.0.0.1, a client
// certificate, a second unrelated CA, and an expired server certificate (through `openssl ca`, which can backdate).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface Pki {
  dir: string;
  ca: string;
  otherCa: string;
  serverCert: string;
  serverKey: string;
  expiredCert: string;
  expiredKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate (signed by `ca`) whose CN is `cn`: with --client-cert-auth, etcd's user of that name. */
  clientFor(cn: string): { cert: string; key: string };
  cleanup(): void;
}

const ossl = (cwd: string, ...args: string[]) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

export function makePki(): Pki {
  const dir = mkdtempSync(path.join(tmpdir(), 'etcd-mirror-pki-'));
  const p = (f: string) => path.join(dir, f);
  const ca = (name: string) => {
    ossl(dir, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`);
  };
  ca('ca');
  ca('other-ca');
  writeFileSync(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  writeFileSync(p('client.ext'), 'extendedKeyUsage=clientAuth\n');
  const leaf = (name: string, ext: string) => {
    ossl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ossl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', ext);
  };
  leaf('server', 'server.ext');
  leaf('client', 'client.ext');
  // An expired certificate needs explicit dates, which only `openssl ca` sets.
  writeFileSync(p('index.txt'), '');
  writeFileSync(p('serial'), '1000\n');
  writeFileSync(
    p('ca.cnf'),
    `[ca]\ndefault_ca=d\n[d]\ndir=${dir}\ndatabase=${dir}/index.txt\nserial=${dir}/serial\nnew_certs_dir=${dir}\ncertificate=${dir}/ca.crt\nprivate_key=${dir}/ca.key\ndefault_md=sha256\npolicy=p\ncopy_extensions=copy\n[p]\ncommonName=supplied\n`,
  );
  ossl(dir, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'expired.key', '-out', 'expired.csr', '-subj', '/CN=expired', '-addext', 'subjectAltName=IP:127.0.0.1');
  ossl(dir, 'ca', '-batch', '-config', 'ca.cnf', '-in', 'expired.csr', '-out', 'expired.crt', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext');
  return {
    dir,
    ca: p('ca.crt'),
    otherCa: p('other-ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    expiredCert: p('expired.crt'),
    expiredKey: p('expired.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    clientFor: (cn: string) => {
      if (!/^[a-z0-9-]+$/.test(cn)) throw new Error(`clientFor: ${cn}: letters, digits and dashes only`);
      leaf(cn, 'client.ext');
      return { cert: p(`${cn}.crt`), key: p(`${cn}.key`) };
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
