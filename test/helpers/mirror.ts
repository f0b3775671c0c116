// Runs the real etcd-mirror binary against real etcd processes, for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll } from 'vitest';
import { EtcdClient } from '../../src/etcd/v2/client.js';
import { parseEndpoint } from '../../src/etcd/endpoint.js';
import { freePort, startEtcd, type EtcdProcess } from '../../src/etcd/process.js';

export const BIN = fileURLToPath(new URL('../../bin/etcd-mirror.js', import.meta.url));

export interface Pair {
  src: EtcdProcess;
  dst: EtcdProcess;
  srcClient: EtcdClient;
  dstClient: EtcdClient;
  stop(): Promise<void>;
}

export async function startPair(): Promise<Pair> {
  const [src, dst] = await Promise.all([startEtcd({ name: 'src' }), startEtcd({ name: 'dst' })]);
  const srcClient = new EtcdClient(parseEndpoint(src.clientUrl, 'src'));
  const dstClient = new EtcdClient(parseEndpoint(dst.clientUrl, 'dst'));
  return {
    src,
    dst,
    srcClient,
    dstClient,
    async stop() {
      await Promise.all([srcClient.close(), dstClient.close()]);
      await Promise.all([src.stop(), dst.stop()]);
    },
  };
}

export interface MirrorProcess {
  readonly proc: ChildProcess;
  readonly port: number;
  /** Parsed JSON log lines (stdout). */
  readonly logs: Record<string, unknown>[];
  stderr(): string;
  state(): Promise<Record<string, unknown>>;
  waitForState(name: string | ((s: Record<string, unknown>) => boolean), timeoutMs?: number): Promise<Record<string, unknown>>;
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited(): Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  metrics(): Promise<string>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});
// A test that fails half-way leaves its mirrors running, and the worker process may outlive the file: every
// mirror a test file started is killed (by PID) when the file is done.
afterAll(() => {
  for (const p of running) p.kill('SIGKILL');
});

export async function spawnMirror(
  args: string[],
  opts: { port?: number; /** Extra environment variables for the mirror, merged over process.env. */ env?: Record<string, string> } = {},
): Promise<MirrorProcess> {
  const port = opts.port ?? (await freePort());
  const proc = spawn(process.execPath, [BIN, '--port', String(port), '--listen-address', '127.0.0.1', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
  });
  running.add(proc);
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let partial = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ raw: line });
      }
    }
  });
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<number | null>((resolve) =>
    proc.on('exit', (code) => {
      running.delete(proc);
      resolve(code);
    }),
  );
  const base = `http://127.0.0.1:${port}`;
  const state = async () => {
    const res = await request(`${base}/state`);
    return (await res.body.json()) as Record<string, unknown>;
  };
  const poll = async <T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`mirror exited (${proc.exitCode}) while waiting for ${what}; stderr: ${stderr.slice(-500)}`);
      try {
        const v = await fn();
        if (v !== undefined) return v;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const s = await state().catch(() => null);
    throw new Error(`timed out waiting for ${what}; last state ${JSON.stringify(s)}; ${String(last ?? '')}`);
  };
  return {
    proc,
    port,
    logs,
    stderr: () => stderr,
    state,
    waitForState: (want, timeoutMs = 20_000) =>
      poll(async () => {
        const s = await state();
        return (typeof want === 'string' ? s.state === want : want(s)) ? s : undefined;
      }, timeoutMs, `state ${String(want)}`),
    waitForLog: (pred, timeoutMs = 20_000) => poll(async () => logs.find(pred), timeoutMs, 'log line'),
    exited: () => exit,
    kill: async (signal = 'SIGKILL') => {
      if (proc.exitCode === null) proc.kill(signal);
      return exit;
    },
    metrics: async () => (await request(`${base}/metrics`)).body.text(),
  };
}

/** Runs the binary to completion (for bad-input tests). */
export async function runMirror(args: string[], timeoutMs = 15_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  running.delete(proc);
  return { code, stdout, stderr };
}

/** How often the mirror went from stalled back to a retry since `since` (a Date.now()), from /state's timeline. */
export const retriesSince = (state: Record<string, unknown>, since: number): number =>
  (state.timeline as { at: string; from: string }[]).filter((t) => t.from === 'stalled' && Date.parse(t.at) >= since).length;

/** Polls until the destination's stored replication index reaches `index`. */
export async function waitForIndex(dst: EtcdClient, indexKey: string, index: number, timeoutMs = 20_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let seen = -1;
  while (Date.now() < deadline) {
    try {
      seen = Number((await dst.get(indexKey)).body.node.value);
      if (seen >= index) return seen;
    } catch {
      // not written yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`replication index at ${indexKey} stayed at ${seen}, wanted ${index}`);
}
