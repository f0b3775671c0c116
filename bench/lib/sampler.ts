// Every 500 ms: the mirror's /state and /proc figures (RSS), for lag, queue, state and memory over a step.
// CPU use is measured separately over exact windows (CpuWindow) so it covers the step and nothing else.
import { cpuPercent, cpuTicks, machineTicks, rssMb } from './procstat.js';
import type { Mirror } from './mirror.js';
import { round } from './stats.js';
import { BACKLOG_EVENTS } from './types.js';

/**
 * [seconds since start, state, lagEvents, queue, inFlight, mirror RSS MB, appliedIndex, reordering (1/0)].
 * The time is when /state answered. Results files from before --ordering have the first six only.
 */
export type CompactSample = [number, string, number | null, number | null, number | null, number | null, (number | null)?, (number | null)?];

export interface SamplerSummary {
  samples: CompactSample[];
  statesSeen: string[];
  maxLagEvents: number | null;
  maxQueue: number | null;
  maxInFlight: number | null;
  maxRssMb: number | null;
  stateErrors: number;
  /** Share of answered samples with /state ordering.reordering true (null: no answered sample had the field). */
  reorderingShare: number | null;
  /**
   * Backlogged sample intervals (tailing at both ends, >= BACKLOG_EVENTS to apply at the start): appliedIndex
   * growth and seconds, split at `splitAtSeconds` (an interval belongs to the part its start is in).
   */
  backlogged: { before: { events: number; seconds: number }; after: { events: number; seconds: number } };
}

export class Sampler {
  readonly #samples: CompactSample[] = [];
  readonly #states = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;
  #errors = 0;
  #start = 0;
  #maxRss: number | null = null;

  constructor(private readonly mirror: () => Mirror | null, private readonly everyMs = 500) {}

  start(): void {
    this.#start = performance.now();
    void this.#tick();
    this.#timer = setInterval(() => void this.#tick(), this.everyMs);
  }

  /** Takes one RSS reading now (also between samples, e.g. right before a process ends). */
  noteRss(): void {
    const m = this.mirror();
    const rss = m?.alive ? rssMb(m.pid) : null;
    if (rss !== null) this.#maxRss = Math.max(this.#maxRss ?? 0, rss);
  }

  async #tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const m = this.mirror();
      const t = round((performance.now() - this.#start) / 1000, 1);
      if (!m || !m.alive) {
        this.#states.add('exited');
        this.#samples.push([t, 'exited', null, null, null, null]);
        return;
      }
      const rss = rssMb(m.pid);
      if (rss !== null) this.#maxRss = Math.max(this.#maxRss ?? 0, rss);
      try {
        const s = await m.state();
        const at = round((performance.now() - this.#start) / 1000, 3);
        this.#states.add(s.state);
        const reordering = typeof s.ordering?.reordering === 'boolean' ? (s.ordering.reordering ? 1 : 0) : null;
        this.#samples.push([at, s.state, s.lagEvents, s.queue ?? null, s.inFlight ?? null, rss === null ? null : round(rss, 1), s.appliedIndex, reordering]);
      } catch {
        this.#errors++;
        this.#samples.push([t, 'no-answer', null, null, null, rss === null ? null : round(rss, 1)]);
      }
    } finally {
      this.#busy = false;
    }
  }

  /** `splitAtSeconds`: where `backlogged` splits (e.g. the step's end; default: never). */
  stop(splitAtSeconds = Infinity): SamplerSummary {
    clearInterval(this.#timer);
    this.noteRss();
    const max = (i: 2 | 3 | 4) => {
      let v: number | null = null;
      for (const s of this.#samples) if (s[i] !== null) v = Math.max(v ?? 0, s[i]!);
      return v;
    };
    let answered = 0;
    let reordering = 0;
    for (const s of this.#samples) {
      if (s[7] === null || s[7] === undefined) continue;
      answered++;
      reordering += s[7];
    }
    // Backlogged intervals: tailing at both ends, >= BACKLOG_EVENTS to apply at the start.
    const before = { events: 0, seconds: 0 };
    const after = { events: 0, seconds: 0 };
    for (let i = 1; i < this.#samples.length; i++) {
      const a = this.#samples[i - 1]!;
      const b = this.#samples[i]!;
      const [ia, ib] = [a[6], b[6]];
      if (a[1] !== 'tailing' || b[1] !== 'tailing' || a[2] === null || a[2] < BACKLOG_EVENTS) continue;
      if (ia === null || ia === undefined || ib === null || ib === undefined || ib < ia) continue;
      const part = a[0] < splitAtSeconds ? before : after;
      part.events += ib - ia;
      part.seconds += b[0] - a[0];
    }
    before.seconds = round(before.seconds, 3);
    after.seconds = round(after.seconds, 3);
    return {
      samples: this.#samples,
      reorderingShare: answered ? round(reordering / answered, 3) : null,
      backlogged: { before, after },
      statesSeen: [...this.#states],
      maxLagEvents: max(2),
      maxQueue: max(3),
      maxInFlight: max(4),
      maxRssMb: this.#maxRss === null ? null : round(this.#maxRss, 1),
      stateErrors: this.#errors,
    };
  }
}

export interface CpuReading {
  at: number;
  pids: Record<string, number | null>;
  ticks: Record<string, number | null>;
  benchMicros: number;
  machine: { total: number; busy: number };
}

/** CPU counters of the named processes (and of this process, all threads) at one instant. */
export function readCpu(pids: Record<string, number | null>): CpuReading {
  const ticks: Record<string, number | null> = {};
  for (const [name, pid] of Object.entries(pids)) ticks[name] = pid === null ? null : cpuTicks(pid);
  const u = process.cpuUsage();
  return { at: performance.now(), pids: { ...pids }, ticks, benchMicros: u.user + u.system, machine: machineTicks() };
}

/** CPU use between two readings: % of one core per process (null if it changed or vanished), machine busy %. */
export function cpuBetween(a: CpuReading, b: CpuReading): Record<string, number | null> {
  const seconds = (b.at - a.at) / 1000;
  const out: Record<string, number | null> = {};
  for (const name of Object.keys(a.ticks)) {
    const samePid = a.pids[name] !== null && a.pids[name] === b.pids[name];
    const p = samePid ? cpuPercent(a.ticks[name] ?? null, b.ticks[name] ?? null, seconds) : null;
    out[name] = p === null ? null : round(p, 1);
  }
  out.bench = round(((b.benchMicros - a.benchMicros) / 1e6 / seconds) * 100, 1);
  const total = b.machine.total - a.machine.total;
  // Machine busy share over all cores (100 = every core busy).
  out.machineBusy = total > 0 ? round(((b.machine.busy - a.machine.busy) / total) * 100, 1) : null;
  return out;
}
