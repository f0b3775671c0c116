// Reads CPU time and resident memory of processes from /proc (Linux only), and the machine's CPU counters.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`, 100 on Linux). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime + stime of a process, in clock ticks; null once it is gone. */
export function cpuTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: fields restart after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return null;
  }
}

/** VmRSS in MB; null once the process is gone. */
export function rssMb(pid: number): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Machine-wide CPU counters from /proc/stat: total and busy ticks, summed over all cores. */
export function machineTicks(): { total: number; busy: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest times are already inside user/nice)
  const total = v.slice(0, 8).reduce((a, b) => a + (b || 0), 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { total, busy: total - idle };
}

/** CPU use between two tick readings, in % of one core. */
export function cpuPercent(ticksBefore: number | null, ticksAfter: number | null, seconds: number): number | null {
  if (ticksBefore === null || ticksAfter === null || seconds <= 0) return null;
  return ((ticksAfter - ticksBefore) / clockTicks() / seconds) * 100;
}

export interface BusyProcess {
  pid: number;
  cpuPercent: number;
  command: string;
}

function allTicks(): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const t = cpuTicks(Number(name));
    if (t !== null) out.set(Number(name), t);
  }
  return out;
}

/** The processes that used the most CPU over `ms` (to document load on the machine besides the benchmark). */
export async function busiestProcesses(ms = 2_000, top = 6): Promise<BusyProcess[]> {
  const a = allTicks();
  await new Promise((r) => setTimeout(r, ms));
  const b = allTicks();
  const rows: BusyProcess[] = [];
  for (const [pid, t] of b) {
    const before = a.get(pid);
    if (before === undefined || t - before <= 0) continue;
    let command = '';
    try {
      command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim().slice(0, 120);
    } catch {
      continue;
    }
    rows.push({ pid, cpuPercent: Math.round(((t - before) / clockTicks() / (ms / 1000)) * 1000) / 10, command });
  }
  return rows.sort((x, y) => y.cpuPercent - x.cpuPercent).slice(0, top);
}
