// The two mirrors the v3 bench compares, behind one interface: etcd-mirror (--src-api v3 --dst-api v3, run through
// the Mirror wrapper) and etcdctl 3.4's make-mirror (a plain child process). Both read the source through the delay
// proxy and write the destination directly; both map /bench to /bench.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, openSync } from 'node:fs';
import path from 'node:path';
import { Mirror, type LogLine } from './mirror.js';
import { rssMb } from './procstat.js';
import { round } from './stats.js';

export const PEERS = ['etcd-mirror', 'make-mirror'] as const;
export type PeerName = (typeof PEERS)[number];

export interface Peer {
  readonly name: PeerName;
  /** PID of the running process; null when none runs. */
  readonly pid: number | null;
  readonly alive: boolean;
  /** Processes started so far. */
  readonly spawns: number;
  /** Exit code and signal of the last process that ended. */
  readonly lastExit: { code: number | null; signal: string | null } | null;
  /** The command line of the last start. */
  readonly command: string[];
  /** Starts a process (etcd-mirror: --reload when `reload`; make-mirror always copies the whole prefix first). */
  start(reload: boolean): Promise<void>;
  /** SIGTERM (SIGKILL after a grace period); resolves once it has exited. */
  stop(): Promise<void>;
}

export interface PeerTarget {
  /** The delay proxy in front of the source. */
  sourceUrl: string;
  destinationUrl: string;
  logFile: string;
}

export class EtcdMirrorPeer implements Peer {
  readonly name = 'etcd-mirror';
  /** Every process started, oldest first (their log lines and problems go into the results). */
  readonly runs: Mirror[] = [];
  command: string[] = [];

  constructor(
    private readonly bin: string,
    private readonly target: PeerTarget,
    private readonly extraArgs: string[],
  ) {}

  get current(): Mirror | null {
    return this.runs[this.runs.length - 1] ?? null;
  }
  get pid(): number | null {
    return this.current?.alive ? this.current.pid : null;
  }
  get alive(): boolean {
    return this.current?.alive ?? false;
  }
  get spawns(): number {
    return this.runs.length;
  }
  get lastExit(): Peer['lastExit'] {
    const ended = [...this.runs].reverse().find((m) => !m.alive);
    return ended ? { code: ended.exitCode, signal: ended.exitSignal } : null;
  }

  async start(reload: boolean): Promise<void> {
    const args = [
      '--src-api', 'v3', '--dst-api', 'v3',
      ...(reload ? ['--reload'] : []),
      '--src-prefix', '/bench', '--dst-prefix', '/bench', '--strip',
      ...this.extraArgs,
      this.target.sourceUrl, this.target.destinationUrl,
    ];
    const m = await Mirror.spawn(this.bin, args, this.target.logFile);
    this.command = [path.basename(this.bin), ...m.args];
    this.runs.push(m);
  }

  async stop(): Promise<void> {
    await this.current?.stop();
  }

  /** Warnings and errors of every process, and the state lines (bounded). */
  problems(): { count: number; lines: LogLine[] } {
    const lines: LogLine[] = [];
    let count = 0;
    for (const m of this.runs) {
      count += m.problemCount;
      for (const p of m.problems) if (lines.length < 30) lines.push(p);
      if (m.exitCode !== null && m.exitCode !== 0 && lines.length < 30) lines.push({ msg: `exit code ${m.exitCode}`, stderr: m.stderrText.slice(-800) });
    }
    return { count, lines };
  }
}

const liveChildren = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of liveChildren) c.kill('SIGKILL');
});

function findEtcdctl(): string {
  for (const dir of ['/usr/bin', ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean)]) {
    const p = path.join(dir, 'etcdctl');
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new Error('etcdctl not found (looked at /usr/bin and PATH)');
}

/** `ETCDCTL_API=3 etcdctl make-mirror --endpoints SRC --prefix /bench --dest-prefix /bench DST`, output to the log file. */
export class MakeMirrorPeer implements Peer {
  readonly name = 'make-mirror';
  command: string[] = [];
  spawns = 0;
  lastExit: Peer['lastExit'] = null;
  #child: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  readonly #binary = findEtcdctl();

  constructor(private readonly target: PeerTarget) {}

  get pid(): number | null {
    return this.alive ? this.#child!.pid! : null;
  }
  get alive(): boolean {
    const c = this.#child;
    return c !== null && c.exitCode === null && c.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.alive) throw new Error('make-mirror: already running');
    const args = ['make-mirror', '--endpoints', this.target.sourceUrl, '--prefix', '/bench', '--dest-prefix', '/bench', this.target.destinationUrl];
    this.command = ['etcdctl', ...args];
    const fd = openSync(this.target.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(this.#binary, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ETCDCTL_API: '3' } });
    } finally {
      closeSync(fd);
    }
    if (child.pid === undefined) throw new Error(`could not spawn ${this.#binary}`);
    this.spawns++;
    this.#child = child;
    liveChildren.add(child);
    child.on('error', () => {});
    this.#exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        liveChildren.delete(child);
        this.lastExit = { code, signal };
        resolve();
      }),
    );
  }

  async stop(graceMs = 5_000): Promise<void> {
    const c = this.#child;
    if (!c || !this.alive) return;
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
    await this.#exited;
    clearTimeout(timer);
  }
}

/** Resident memory of the peer's current process every `everyMs` (its maximum over every process, and the latest). */
export class RssSampler {
  maxMb: number | null = null;
  lastMb: number | null = null;
  readonly #timer: NodeJS.Timeout;

  constructor(private readonly pid: () => number | null, everyMs = 250) {
    this.#timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): number | null {
    const pid = this.pid();
    const mb = pid === null ? null : rssMb(pid);
    if (mb !== null) {
      this.lastMb = round(mb, 1);
      this.maxMb = Math.max(this.maxMb ?? 0, this.lastMb);
    }
    return mb;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
