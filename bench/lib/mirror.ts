// The mirror under test as a child process: its JSON log lines (kept in a file, problems kept in memory),
// /state and /metrics.
import { round } from './stats.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { freePort } from '../../src/etcd/process.js';

export interface LogLine {
  level?: number;
  time?: number;
  msg?: string;
  [k: string]: unknown;
}

export interface MirrorState {
  state: string;
  reason?: string;
  sourceIndex: number | null;
  appliedIndex: number | null;
  lagEvents: number | null;
  queue?: number;
  inFlight?: number;
  ordering?: { mode?: string; current?: string; reordering?: boolean; reorderingSeconds?: number };
  [k: string]: unknown;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** Sum of every sample of each metric name, and the per-label samples of a few. */
export interface MetricsSnapshot {
  sums: Map<string, number>;
  /** name → label string → value, for labelled metrics. */
  labelled: Map<string, Map<string, number>>;
}

export function parseMetrics(text: string): MetricsSnapshot {
  const sums = new Map<string, number>();
  const labelled = new Map<string, Map<string, number>>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    const name = m[1]!;
    sums.set(name, (sums.get(name) ?? 0) + value);
    if (m[2]) {
      let byLabel = labelled.get(name);
      if (!byLabel) labelled.set(name, (byLabel = new Map()));
      byLabel.set(m[2], value);
    }
  }
  return { sums, labelled };
}

/** A histogram's observations between two scrapes (`writes`: how many). */
export interface HistogramDelta {
  writes: number;
  p50AtMostMs: number | null;
  p99AtMostMs: number | null;
  over25msShare: number;
}

/**
 * A latency histogram of the mirror between two scrapes (etcdmirror_write_latency, etcdmirror_event_wait_seconds), from
 * its delta: the count, the bucket upper bounds holding the median and the 99th percentile (ms), and the share above 25 ms.
 */
export function histogramDelta(a: MetricsSnapshot | null | undefined, b: MetricsSnapshot | null | undefined, name: string): HistogramDelta | null {
  const buckets = b?.labelled.get(`${name}_bucket`);
  if (!buckets) return null;
  const rows: { le: number; count: number }[] = [];
  for (const [labels, value] of buckets) {
    const le = /le="([^"]+)"/.exec(labels)?.[1];
    if (le === undefined) continue;
    rows.push({ le: le === '+Inf' ? Infinity : Number(le) * 1000, count: value - (a?.labelled.get(`${name}_bucket`)?.get(labels) ?? 0) });
  }
  rows.sort((x, y) => x.le - y.le);
  const total = rows[rows.length - 1]?.count ?? 0;
  if (total <= 0) return null;
  const upper = (q: number) => rows.find((r) => r.count >= q * total)?.le ?? null;
  const under25 = rows.find((r) => r.le >= 25)?.count ?? total;
  return { writes: total, p50AtMostMs: upper(0.5), p99AtMostMs: upper(0.99), over25msShare: round((total - under25) / total, 4) };
}

export class Mirror {
  readonly logs: LogLine[] = [];
  /** Lines at warn level or above, and lines that are not JSON (bounded). */
  readonly problems: LogLine[] = [];
  problemCount = 0;
  stderrText = '';
  exitCode: number | null = null;
  exitSignal: string | null = null;
  exitedAt: number | null = null;
  readonly exited: Promise<void>;
  readonly spawnedAt = Date.now();
  readonly #proc: ChildProcess;
  readonly #base: string;
  readonly #log: WriteStream;

  private constructor(proc: ChildProcess, readonly port: number, readonly args: string[], logFile: string) {
    this.#proc = proc;
    this.#base = `http://127.0.0.1:${port}`;
    this.#log = createWriteStream(logFile, { flags: 'a' });
    this.#log.write(`# ${new Date().toISOString()} spawn ${args.join(' ')}\n`);
    running.add(proc);
    let partial = '';
    proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#log.write(chunk);
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim()) this.#onLine(line);
    });
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#log.write(`# stderr: ${chunk}`);
      if (this.stderrText.length < 4_000) this.stderrText += chunk;
    });
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        running.delete(proc);
        this.exitCode = code;
        this.exitSignal = signal;
        this.exitedAt = Date.now();
        this.#log.end(`# exit code ${code} signal ${signal}\n`);
        resolve();
      }),
    );
  }

  static async spawn(bin: string, args: string[], logFile: string): Promise<Mirror> {
    const port = await freePort();
    const full = [bin, '--port', String(port), '--listen-address', '127.0.0.1', ...args];
    const proc = spawn(process.execPath, full, { stdio: ['ignore', 'pipe', 'pipe'] });
    return new Mirror(proc, port, full.slice(1), logFile);
  }

  get pid(): number {
    return this.#proc.pid!;
  }

  get alive(): boolean {
    return this.exitedAt === null;
  }

  #onLine(line: string): void {
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      parsed = { level: 40, msg: `(not JSON) ${line.slice(0, 300)}` };
    }
    const keep =
      (parsed.level ?? 0) >= 40 ||
      (typeof parsed.msg === 'string' &&
        (parsed.msg.startsWith('state: ') || parsed.msg.startsWith('destination reconciled') || parsed.msg.startsWith('tailing the source')));
    if (keep && this.logs.length < 2_000) this.logs.push(parsed);
    if ((parsed.level ?? 0) >= 40) {
      this.problemCount++;
      if (this.problems.length < 50) this.problems.push(parsed);
    }
  }

  async state(): Promise<MirrorState> {
    const res = await request(`${this.#base}/state`, { headersTimeout: 2_000, bodyTimeout: 2_000 });
    return (await res.body.json()) as MirrorState;
  }

  async metrics(): Promise<MetricsSnapshot> {
    const res = await request(`${this.#base}/metrics`, { headersTimeout: 2_000, bodyTimeout: 2_000 });
    return parseMetrics(await res.body.text());
  }

  /** Polls /state every `everyMs` until `pred` holds; null on timeout or exit. */
  async waitState(pred: (s: MirrorState) => boolean, timeoutMs: number, everyMs = 50): Promise<MirrorState | null> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && this.alive) {
      try {
        const s = await this.state();
        if (pred(s)) return s;
      } catch {
        // HTTP not up yet
      }
      await sleep(everyMs);
    }
    return null;
  }

  async waitLog(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine | null> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const hit = this.logs.find(pred);
      if (hit) return hit;
      if (!this.alive) return null;
      await sleep(50);
    }
    return null;
  }

  /** SIGTERM, wait for the exit (SIGKILL after `graceMs`). Returns the exit code. */
  async stop(graceMs = 8_000): Promise<number | null> {
    if (this.alive) {
      this.#proc.kill('SIGTERM');
      const timer = setTimeout(() => this.#proc.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitCode;
  }

  kill(): void {
    if (this.alive) this.#proc.kill('SIGKILL');
  }
}
