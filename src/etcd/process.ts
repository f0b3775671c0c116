// Starts throw-away single-member etcd servers (v2 API enabled) on 127.0.0.1 for the demo, tests and benchmarks.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, closeSync, openSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';

export interface EtcdProcess {
  /** http://127.0.0.1:PORT */
  readonly clientUrl: string;
  /** With `plainListener`: an extra http:// client URL (no TLS, so no client certificate: guest access only). */
  readonly plainUrl: string | undefined;
  /** PID of the current etcd process (changes on restart). */
  readonly pid: number;
  readonly dataDir: string;
  readonly name: string;
  /** SIGTERM, wait for exit (SIGKILL after 5 s), then remove the data dir unless keepDataDir. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL) and waits for the exit; the data dir stays. SIGSTOP/SIGCONT return at once. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts etcd again on the same ports and data dir (stopping it first if running) and waits until ready. */
  restart(): Promise<void>;
}

export interface StartEtcdOptions {
  name?: string;
  dataDir?: string;
  clientPort?: number;
  peerPort?: number;
  extraArgs?: string[];
  keepDataDir?: boolean;
  logFile?: string;
  /**
   * Serve clients over https with this certificate; `caFile` + `clientCertAuth` require client certificates,
   * and then the readiness probe presents `probeCertFile`/`probeKeyFile`.
   */
  tls?: { certFile: string; keyFile: string; caFile?: string; clientCertAuth?: boolean; probeCertFile?: string; probeKeyFile?: string };
  /** With `tls`: also serve plain http on another port (the bench's load generators, as guests). */
  plainListener?: boolean;
}

const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 5_000;
const START_ATTEMPTS = 5;

// Every etcd we started that has not exited yet, by PID: killed if our process exits first, and its
// temp dir (if we made it and need not keep it) removed.
const running = new Map<number, { child: ChildProcess; removeOnExit: string | undefined }>();
let exitHookInstalled = false;

function killAllChildren(): void {
  for (const [pid, { removeOnExit }] of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    if (removeOnExit) rmSync(removeOnExit, { recursive: true, force: true });
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous; SIGKILL because there is no time left for a graceful stop.
  process.on('exit', killAllChildren);
  // A signal's default action ends the process without 'exit' (vitest stops its fork workers with SIGTERM).
  // Only when nobody else handles the signal: kill the children, then re-raise it so the default action
  // still happens. A program with its own handler (the demo command) is left to stop its etcds itself.
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    const onSignal = (): void => {
      if (process.listenerCount(sig) > 1) return;
      killAllChildren();
      process.off(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** A currently free TCP port on 127.0.0.1 (racy by nature: someone may take it before we do). */
/** Ports this process handed out: the kernel may offer a port again once its probe closed, before the etcd it was
 * meant for has bound it (two etcds started at once then got the same port). */
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const address = server.address();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (address === null || typeof address === 'string') throw new Error('freePort: unexpected server address');
    if (handedOut.has(address.port)) continue;
    if (handedOut.size >= 10_000) handedOut.clear();
    handedOut.add(address.port);
    return address.port;
  }
}

function findEtcdBinary(): string {
  const candidates = ['/usr/bin/etcd', ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.join(d, 'etcd'))];
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  throw new Error('etcd binary not found (looked at /usr/bin/etcd and PATH); install it with scripts/setup.sh or `apt-get install etcd-server`');
}

function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  // Hold the event loop while someone is waiting for the exit (the child itself is unref'd).
  child.ref();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Resolves true once a quorum GET of the root answers; false if the process died first; throws on timeout. */
async function waitReady(clientUrl: string, child: ChildProcess, logFile: string, tls?: StartEtcdOptions['tls']): Promise<boolean> {
  // Readiness only checks that etcd answers; it does not verify test certificates.
  const readinessAgent = new Agent({
    connect: {
      rejectUnauthorized: false,
      ...(tls?.probeCertFile && tls.probeKeyFile ? { cert: readFileSync(tls.probeCertFile), key: readFileSync(tls.probeKeyFile) } : {}),
    },
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let exited = child.exitCode !== null || child.signalCode !== null;
  child.once('exit', () => (exited = true));
  while (Date.now() < deadline) {
    if (exited) return false;
    try {
      // quorum=true goes through raft, so "ready" also means a leader was elected and writes will be served.
      // 401 counts as ready: after enableAuth anonymous reads are refused, but etcd is clearly serving.
      const res = await request(`${clientUrl}/v2/keys/?quorum=true`, { headersTimeout: 1_000, bodyTimeout: 1_000, reset: true, dispatcher: readinessAgent });
      await res.body.text();
      if (res.statusCode === 200 || res.statusCode === 401) {
        await readinessAgent.close();
        return true;
      }
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  await readinessAgent.close();
  throw new Error(`etcd at ${clientUrl} not ready after ${READY_TIMEOUT_MS} ms; log ${logFile}:\n${logTail(logFile)}`);
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdProcess> {
  const binary = findEtcdBinary();
  installExitHook();
  // Our own temp dir holds data and log, so parallel instances never share a log file name.
  const ownBase = opts.dataDir === undefined ? await mkdtemp(path.join(tmpdir(), 'etcd-mirror-')) : undefined;
  const dataDir = opts.dataDir ?? path.join(ownBase!, 'data');
  const name = opts.name ?? 'etcd';
  const logFile = opts.logFile ?? path.join(path.dirname(dataDir), `${name}.log`);
  const fixedPorts = opts.clientPort !== undefined || opts.peerPort !== undefined;
  let clientPort = opts.clientPort ?? 0;
  let peerPort = opts.peerPort ?? 0;
  let plainPort = 0;
  let child: ChildProcess | undefined;
  let stopped = false;

  const clientUrl = (): string => `${opts.tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  const tlsArgs = opts.tls
    ? [
        '--cert-file', opts.tls.certFile,
        '--key-file', opts.tls.keyFile,
        ...(opts.tls.caFile ? ['--trusted-ca-file', opts.tls.caFile] : []),
        ...(opts.tls.clientCertAuth ? ['--client-cert-auth'] : []),
      ]
    : [];

  async function launch(): Promise<boolean> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const args = [
      '--name', name,
      '--data-dir', dataDir,
      '--enable-v2=true',
      '--listen-client-urls', [clientUrl(), ...(plainPort ? [`http://127.0.0.1:${plainPort}`] : [])].join(','),
      '--advertise-client-urls', clientUrl(),
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `${name}=${peerUrl}`,
      '--initial-cluster-state', 'new',
      ...tlsArgs,
      ...(opts.extraArgs ?? []),
    ];
    const fd = openSync(logFile, 'a');
    try {
      child = spawn(binary, args, { stdio: ['ignore', fd, fd], detached: false });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    const c = child;
    if (c.pid === undefined) {
      await new Promise((resolve) => c.once('error', resolve));
      throw new Error(`could not spawn ${binary}`);
    }
    const pid = c.pid;
    running.set(pid, { child: c, removeOnExit: opts.keepDataDir ? undefined : ownBase });
    c.once('exit', () => running.delete(pid));
    c.on('error', () => {}); // a failed kill() must not crash the host process
    c.unref(); // an idle etcd must not keep our process alive; the exit hook kills it
    return waitReady(clientUrl(), c, logFile, opts.tls);
  }

  async function terminate(): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = waitExit(c);
    c.kill('SIGTERM');
    c.kill('SIGCONT'); // a SIGSTOPped etcd would otherwise never see the SIGTERM
    const timer = setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  }

  for (let attempt = 1; ; attempt++) {
    if (!fixedPorts) {
      clientPort = await freePort();
      do peerPort = await freePort();
      while (peerPort === clientPort);
      if (opts.plainListener) {
        do plainPort = await freePort();
        while (plainPort === clientPort || plainPort === peerPort);
      }
    }
    if (await launch()) break;
    // Exited early: most likely a port was taken between freePort() and etcd's bind. Start from scratch.
    if (fixedPorts || attempt >= START_ATTEMPTS) {
      throw new Error(`etcd exited during startup (attempt ${attempt}); log ${logFile}:\n${logTail(logFile)}`);
    }
    await rm(dataDir, { recursive: true, force: true });
  }

  return {
    get clientUrl() {
      return clientUrl();
    },
    get plainUrl() {
      return plainPort ? `http://127.0.0.1:${plainPort}` : undefined;
    },
    get pid() {
      return child!.pid!;
    },
    dataDir,
    name,
    async stop() {
      stopped = true;
      await terminate();
      if (!opts.keepDataDir) await rm(ownBase ?? dataDir, { recursive: true, force: true });
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      const c = child!;
      if (signal === 'SIGSTOP' || signal === 'SIGCONT' || signal === 'SIGTSTP') {
        c.kill(signal);
        return;
      }
      const exited = waitExit(c);
      c.kill(signal);
      await exited;
    },
    async restart() {
      if (stopped) throw new Error(`etcd ${name}: restart() after stop()`);
      await terminate();
      if (!(await launch())) throw new Error(`etcd ${name} exited during restart; log ${logFile}:\n${logTail(logFile)}`);
    },
  };
}

export interface AuthUser {
  user: string;
  /** None: a certificate user (see enableAuth). */
  password?: string;
  /** Key patterns as etcd v2 understands them, e.g. ['/app', '/app/*'] or ['/app*']. */
  read: string[];
  write: string[];
}

/** TLS material for the setup calls to an https etcd that requires client certificates. */
export interface AuthTls {
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
}

async function authCall(url: string, method: 'PUT', body: unknown, basic?: string, dispatcher?: Agent): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (basic) headers.authorization = 'Basic ' + Buffer.from(basic).toString('base64');
  const res = await request(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), dispatcher });
  const text = await res.body.text();
  if (res.statusCode !== 200 && res.statusCode !== 201) {
    throw new Error(`${method} ${new URL(url).pathname}: HTTP ${res.statusCode} ${text.trim()}`);
  }
}

/**
 * Turns on v2 auth: root user, one role `<user>-role` per user with the given patterns, the users, then
 * `enable`, and finally revokes the guest role's default read+write on `/*` (otherwise anonymous requests
 * keep full access, notes section 9). `guest` grants anonymous access back on some patterns (for load that must
 * not pay the password check); `tls` is for an https etcd with --client-cert-auth. A user without a password gets
 * a random one: it authenticates with a client certificate whose CN is its name.
 */
export async function enableAuth(
  clientUrl: string,
  opts: { rootPassword: string; users?: AuthUser[]; guest?: { read: string[]; write: string[] }; tls?: AuthTls },
): Promise<void> {
  const base = clientUrl.replace(/\/+$/, '');
  const file = (f: string | Buffer) => (typeof f === 'string' ? readFileSync(f) : f);
  const dispatcher = opts.tls ? new Agent({ connect: { ca: file(opts.tls.ca), cert: file(opts.tls.cert), key: file(opts.tls.key) } }) : undefined;
  try {
    const call = (path: string, body: unknown, basic?: string) => authCall(`${base}${path}`, 'PUT', body, basic, dispatcher);
    await call('/v2/auth/users/root', { user: 'root', password: opts.rootPassword });
    for (const u of opts.users ?? []) {
      const role = `${u.user}-role`;
      await call(`/v2/auth/roles/${encodeURIComponent(role)}`, { role, permissions: { kv: { read: u.read, write: u.write } } });
      const password = u.password ?? randomBytes(12).toString('hex');
      await call(`/v2/auth/users/${encodeURIComponent(u.user)}`, { user: u.user, password, roles: [role] });
    }
    await call('/v2/auth/enable', undefined);
    const root = `root:${opts.rootPassword}`;
    await call('/v2/auth/roles/guest', { role: 'guest', revoke: { kv: { read: ['/*'], write: ['/*'] } } }, root);
    if (opts.guest) await call('/v2/auth/roles/guest', { role: 'guest', grant: { kv: opts.guest } }, root);
  } finally {
    await dispatcher?.close();
  }
}
