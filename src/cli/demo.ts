// `etcd-mirror demo`: a real mirror between two throw-away local etcd servers, with light sample traffic,
// so an operator can watch it work (the /ui page, HTTP endpoints, logs) before pointing it at production clusters.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { apiFlag, checkApis, parseConfig } from './config.js';
import { EtcdClient } from '../etcd/v2/client.js';
import { parseCluster, parseEndpoint } from '../etcd/endpoint.js';
import { V3Client } from '../etcd/v3/client.js';
import { freePort, startEtcd, type EtcdProcess } from '../etcd/process.js';
import { createLogger } from '../daemon/log.js';
import { startMirror } from '../daemon/main.js';

const TRAFFIC_LIMIT_MS = 60 * 60 * 1000; // sample traffic stops by itself after an hour

export async function runDemo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { port: { type: 'string' }, debug: { type: 'boolean', short: 'd' }, 'src-api': { type: 'string' }, 'dst-api': { type: 'string' }, ha: { type: 'boolean' } },
  });
  const srcApi = apiFlag(values['src-api'], '--src-api');
  const dstApi = apiFlag(values['dst-api'], '--dst-api');
  checkApis(srcApi, dstApi);
  const etcds: EtcdProcess[] = [];
  const log = createLogger({ debug: values.debug ?? false });
  try {
    process.stderr.write('demo: starting a source and a destination etcd on free loopback ports...\n');
    const source = await startEtcd({ name: 'demo-source' });
    etcds.push(source);
    const destination = await startEtcd({ name: 'demo-destination' });
    etcds.push(destination);
    const port = values.port ?? String(await preferredPort(8000));

    const srcClient = srcApi === 'v2' ? new V2Writer(source.clientUrl) : new V3Writer(source.clientUrl);
    await seed(srcClient);
    const mirrorArgs = ['--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', '--listen-address', '127.0.0.1', '--src-api', srcApi, '--dst-api', dstApi];
    if (values.ha) return await haDemo(Number(port), mirrorArgs, source.clientUrl, destination.clientUrl, srcClient);
    const parsed = parseConfig([
      '--reload', '--src-prefix', '/conftool', '--dst-prefix', '/conftool', '--strip', '--port', port, '--listen-address', '127.0.0.1',
      '--src-api', srcApi, '--dst-api', dstApi, source.clientUrl, destination.clientUrl,
    ]);
    if (parsed.kind !== 'run') throw new Error('unreachable');
    const mirror = await startMirror(parsed.config, { log });

    process.stderr.write(
      [
        '',
        'demo: etcd-mirror is running. Open the live statechart and status page:',
        '',
        `  ${mirror.httpUrl}/ui`,
        '',
        `  source etcd       ${source.clientUrl}   (${srcApi}, prefix /conftool)`,
        `  destination etcd  ${destination.clientUrl}   (${dstApi}, prefix /conftool, index at /__replication/conftool)`,
        `  state             ${mirror.httpUrl}/state`,
        `  metrics           ${mirror.httpUrl}/metrics`,
        `  lag               ${mirror.httpUrl}/lag`,
        `  ready             ${mirror.httpUrl}/readyz`,
        ...(srcApi === 'v2'
          ? [`  try               curl -X PUT ${source.clientUrl}/v2/keys/conftool/hello -d value=world`]
          : [`  try               ETCDCTL_API=3 etcdctl --endpoints ${source.clientUrl} put /conftool/hello world`]),
        dstApi === 'v2'
          ? `                    curl ${destination.clientUrl}/v2/keys/conftool/hello`
          : `                    ETCDCTL_API=3 etcdctl --endpoints ${destination.clientUrl} get /conftool/hello`,
        'demo: sample traffic writes to the source every second; logs (JSON) follow on stdout. Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );

    let stopping = false;
    const stopAll = () => {
      if (stopping) return;
      stopping = true;
      mirror.stop('demo stopped');
    };
    process.on('SIGINT', stopAll);
    process.on('SIGTERM', stopAll);
    const traffic = sampleTraffic(srcClient, () => stopping);
    const code = await mirror.done;
    stopping = true;
    await traffic;
    await srcClient.close();
    return code;
  } finally {
    await Promise.all(etcds.map((e) => e.stop().catch(() => {})));
  }
}

/**
 * `demo --ha`: two instances as child processes (as on two hosts), so that an operator can kill the active one
 * (`kill -9 PID`, or `kill -STOP PID` for a pause) and watch the other take over on its /ui.
 */
async function haDemo(port: number, mirrorArgs: string[], srcUrl: string, dstUrl: string, srcClient: DemoWriter): Promise<number> {
  const bin = fileURLToPath(new URL('../../../bin/etcd-mirror.js', import.meta.url));
  const ports = [port, await preferredPort(port + 1)];
  const children = ports.map((p, i) =>
    spawn(process.execPath, [bin, '--ha', '--ha-ttl', '5', '--instance-id', `demo-${'ab'[i]}`, '--port', String(p), ...(i === 0 ? ['--reload'] : []), ...mirrorArgs, srcUrl, dstUrl], {
      stdio: ['ignore', 'inherit', 'inherit'],
    }),
  );
  process.stderr.write(
    [
      '',
      'demo --ha: two etcd-mirror instances compete for one lock on the destination; one is active, one stands by.',
      ...children.map((c, i) => `  instance demo-${'ab'[i]}  pid ${c.pid}   http://127.0.0.1:${ports[i]}/ui`),
      '  kill -9 <pid of the active one> and watch the other take over within the TTL (5 s); kill -STOP pauses one.',
      'demo: sample traffic writes to the source every second. Ctrl-C stops everything.',
      '',
    ].join('\n'),
  );
  let stopping = false;
  const exited = children.map((c) => new Promise<void>((r) => c.once('exit', () => r())));
  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    for (const c of children) {
      c.kill('SIGCONT'); // a paused instance must be able to stop
      c.kill('SIGTERM');
    }
  };
  process.on('SIGINT', stopAll);
  process.on('SIGTERM', stopAll);
  const traffic = sampleTraffic(srcClient, () => stopping);
  await Promise.all(exited);
  stopping = true;
  await traffic;
  await srcClient.close();
  return 0;
}

async function preferredPort(port: number): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(freePort()));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(port)));
  });
}

/** Sample writes through the source's API: values, and a lock that expires (a v2 TTL or a v3 lease). */
interface DemoWriter {
  put(key: string, value: string): Promise<void>;
  putExpiring(key: string, value: string, ttlSeconds: number): Promise<void>;
  close(): Promise<void>;
}

class V2Writer implements DemoWriter {
  readonly #client: EtcdClient;
  constructor(url: string) {
    this.#client = new EtcdClient(parseEndpoint(url, 'source'));
  }
  async put(key: string, value: string) {
    await this.#client.put(key, { value });
  }
  async putExpiring(key: string, value: string, ttl: number) {
    await this.#client.put(key, { value, ttl });
  }
  close() {
    return this.#client.close();
  }
}

class V3Writer implements DemoWriter {
  readonly #client: V3Client;
  constructor(url: string) {
    this.#client = new V3Client(parseCluster(url, 'source'));
  }
  async put(key: string, value: string) {
    await this.#client.put(Buffer.from(key), Buffer.from(value));
  }
  async putExpiring(key: string, value: string, ttl: number) {
    const { id } = await this.#client.leaseGrant(ttl);
    await this.#client.put(Buffer.from(key), Buffer.from(value), { lease: id });
  }
  close() {
    return this.#client.close();
  }
}

async function seed(src: DemoWriter): Promise<void> {
  for (const dc of ['eqiad', 'codfw']) {
    for (const host of ['mw1001', 'mw1002', 'mw1003']) {
      await src.put(`/conftool/v1/pools/${dc}/appserver/apache2/${host}.${dc}.wmnet`, JSON.stringify({ pooled: 'yes', weight: 10 }));
    }
  }
  await src.put('/conftool/v1/mediawiki-config/common/WMFMasterDatacenter', JSON.stringify({ val: 'eqiad' }));
}

async function sampleTraffic(src: DemoWriter, stopped: () => boolean): Promise<void> {
  const until = Date.now() + TRAFFIC_LIMIT_MS;
  let i = 0;
  while (!stopped() && Date.now() < until) {
    const host = `mw100${(i % 3) + 1}`;
    const dc = i % 2 ? 'eqiad' : 'codfw';
    try {
      await src.put(`/conftool/v1/pools/${dc}/appserver/apache2/${host}.${dc}.wmnet`, JSON.stringify({ pooled: i % 4 === 0 ? 'no' : 'yes', weight: 10 + (i % 5) }));
      if (i % 10 === 0) await src.putExpiring(`/conftool/locks/demo-${i}`, 'held', 5);
    } catch {
      // the demo source may be stopping; the loop ends with it
    }
    i++;
    await new Promise((r) => setTimeout(r, 1000));
  }
}
