// The bench's destination etcd: the single member of before (data in os.tmpdir()), or, with --dst-commit-ms N, a
// three-member cluster whose raft peer links each pass through a delay proxy (N/2 ms each way), so that one write
// at a time commits in about N ms, as on a production cluster spread over hosts. With --dst-disk its data dirs
// are in os.tmpdir() (etcd fsyncs its WAL: 3.4 has no switch to turn that off); without it, in /dev/shm (tmpfs),
// so that N is the network's share alone.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { freePort, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';
import type { V3Client } from '../../src/etcd/v3/client.js';
import { writeSequentiallyFor, timeSequentialWrites } from './etcd-http.js';
import { round, summarize } from './stats.js';
import type { DstCeiling } from './types.js';
import { startDelayProxy, type DelayProxy } from './workers.js';

export interface DestinationSpec {
  /** null: one member, as before; a number: three members with N/2 ms on each peer link, each way. */
  commitMs: number | null;
  /** Data dirs in os.tmpdir() (on disk here) instead of /dev/shm. */
  disk: boolean;
}

/** What the benches use of a destination: the leader's client URL and PID (its CPU is the one counted). */
export interface Destination {
  readonly clientUrl: string;
  readonly pid: number;
  /** Every member's client URL, the leader first. */
  readonly clientUrls: string[];
  readonly description: string;
  stop(): Promise<void>;
}

/** Filesystem type of the mount holding `dir` (longest matching mount point in /proc/mounts). */
export function filesystemOf(dir: string): string {
  try {
    let best = { point: '', type: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, point, type] = line.split(' ');
      if (!point || !type) continue;
      if ((dir === point || dir.startsWith(point.endsWith('/') ? point : `${point}/`)) && point.length > best.point.length) best = { point, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

export function describeSpec(spec: DestinationSpec): string {
  const base = spec.disk || spec.commitMs === null ? os.tmpdir() : '/dev/shm';
  const where = `data in ${base} (${filesystemOf(base)}${filesystemOf(base) === 'tmpfs' ? '' : ', fsync on'})`;
  return spec.commitMs === null ? `one member, ${where}` : `three members, +${spec.commitMs / 2} ms each way on every raft peer link, ${where}`;
}

async function isLeader(clientUrl: string): Promise<boolean> {
  const res = await request(`${clientUrl}/v2/stats/self`, { headersTimeout: 2_000, bodyTimeout: 2_000 });
  const body = (await res.body.json()) as { state?: string };
  return body.state === 'StateLeader';
}

export async function startDestination(name: string, spec: DestinationSpec): Promise<Destination> {
  if (spec.commitMs === null) {
    const e = await startEtcd({ name });
    return { clientUrl: e.clientUrl, pid: e.pid, clientUrls: [e.clientUrl], description: describeSpec(spec), stop: () => e.stop() };
  }
  const parent = spec.disk || !existsSync('/dev/shm') ? os.tmpdir() : '/dev/shm';
  const base = await mkdtemp(path.join(parent, 'etcd-mirror-dst-'));
  const proxies: DelayProxy[] = [];
  const members: EtcdProcess[] = [];
  const stop = async () => {
    await Promise.all(members.map((m) => m.stop().catch(() => {})));
    await Promise.all(proxies.map((p) => p.close()));
    await rm(base, { recursive: true, force: true });
  };
  try {
    const ports: { client: number; peer: number }[] = [];
    const taken = new Set<number>();
    const port = async () => {
      for (;;) {
        const p = await freePort();
        if (!taken.has(p)) {
          taken.add(p);
          return p;
        }
      }
    };
    for (let i = 0; i < 3; i++) ports.push({ client: await port(), peer: await port() });
    // Member i advertises its proxy: every raft message to i, and every answer on a stream i opened, pays the delay.
    for (const p of ports) proxies.push(await startDelayProxy({ host: '127.0.0.1', port: p.peer }, spec.commitMs / 2));
    const names = ports.map((_, i) => `${name}-${i}`);
    const initialCluster = names.map((n, i) => `${n}=${proxies[i]!.url}`).join(',');
    const token = `bench-${randomBytes(4).toString('hex')}`;
    const started = await Promise.all(
      ports.map(async (p, i) => {
        const dataDir = path.join(base, names[i]!, 'data');
        await mkdir(path.dirname(dataDir), { recursive: true });
        // startEtcd's own single-member --initial-* flags come first; these later ones override them.
        return startEtcd({
          name: names[i]!,
          dataDir,
          clientPort: p.client,
          peerPort: p.peer,
          extraArgs: ['--initial-advertise-peer-urls', proxies[i]!.url, '--initial-cluster', initialCluster, '--initial-cluster-token', token],
        });
      }),
    );
    members.push(...started);
    let leader: EtcdProcess | undefined;
    for (let attempt = 0; attempt < 50 && !leader; attempt++) {
      for (const m of members) if (await isLeader(m.clientUrl).catch(() => false)) leader = m;
      if (!leader) await new Promise((r) => setTimeout(r, 100));
    }
    if (!leader) throw new Error('three-member destination: no leader found');
    const l = leader;
    return {
      clientUrl: l.clientUrl,
      pid: l.pid,
      clientUrls: [l.clientUrl, ...members.filter((m) => m !== l).map((m) => m.clientUrl)],
      description: describeSpec(spec),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * One connection writing one key at a time (each PUT waits for the previous answer) to a v2 destination for
 * `seconds`, under /ceiling (outside the mirrored prefix): the strict order's ceiling at this destination, taken
 * either on its own or beside the mirror's load.
 */
export async function sequentialV2(clientUrl: string, seconds: number, tag: string): Promise<DstCeiling> {
  return ceilingOf(await writeSequentiallyFor(clientUrl, seconds, (i) => `/ceiling/${tag}/k${i % 100}`, (i) => `c-${i}`));
}

/** The same one-at-a-time writer for a v3 destination (one gRPC client, each Put waits for the previous answer). */
export async function sequentialV3(client: V3Client, seconds: number, tag: string): Promise<DstCeiling> {
  const key = (i: number) => Buffer.from(`/ceiling/${tag}/k${i % 100}`);
  await client.put(key(0), Buffer.from('warm-up'));
  return ceilingOf(await timeSequentialWrites(seconds, (i) => client.put(key(i), Buffer.from(`c-${i}`))));
}

function ceilingOf(w: { writes: number; failed: number; seconds: number; latencies: number[] }): DstCeiling {
  const s = summarize(w.latencies);
  return {
    writes: w.writes,
    failed: w.failed,
    seconds: round(w.seconds, 3),
    writesPerSecond: round(w.writes / w.seconds, 1),
    p50Ms: s.p50 === null ? null : round(s.p50, 2),
    p99Ms: s.p99 === null ? null : round(s.p99, 2),
  };
}
