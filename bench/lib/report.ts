// Output: the stdout table, the target evaluation stored in the JSON, and a hand-drawn SVG plot.
import type { BenchResults, Mode, StepResult } from './types.js';

const fmt = (v: number | null | undefined, digits = 1): string =>
  v === null || v === undefined ? '-' : Number.isInteger(v) ? String(v) : v.toFixed(digits);

/** Aligned columns: text columns (`left`) padded right, numbers padded left. */
function pad(cells: string[][], left: number[] = [0, 1]): string {
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const lines = cells.map((r) => r.map((c, i) => (left.includes(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd());
  return lines.join('\n') + '\n';
}

export function printTable(r: BenchResults): string {
  const rtt = r.options.rttMs as number;
  let out = `\netcd-mirror bench, RTT ${rtt} ms (source behind the delay proxy), ${r.startedAt}\n\n`;
  const head = [
    'mode', 'verdict', 'put/s', 'achieved', 'notSent', 'ack p99', 'can n', 'mean', 'p50', 'p99', 'max', 'miss', 'OOW', '401',
    'lagMax', 'caughtUp', 'mCPU%', 'RSS MB', 'wr/ev', 'src%', 'dst%', 'bench%', 'busy%',
  ];
  const rows = [head];
  for (const m of r.modes) {
    for (const s of m.steps) {
      rows.push([
        m.mode, s.verdict, String(s.rate), fmt(s.antagonist.achievedRate), String(s.antagonist.notSent),
        fmt(s.antagonist.ackLatencyMs.p99), String(s.canary.seen), fmt(s.canary.delayMs.mean), fmt(s.canary.delayMs.p50),
        fmt(s.canary.delayMs.p99), fmt(s.canary.delayMs.max), String(s.canary.missing), String(s.mirror.outOfWindow), String(s.mirror.errors401),
        fmt(s.mirror.maxLagEvents, 0), s.drain.caughtUpMs === null ? 'no' : `${s.drain.caughtUpMs}ms`, fmt(s.cpuPercent.mirror),
        fmt(s.mirror.maxRssMb), fmt(s.mirror.dstWritesPerEvent, 2), fmt(s.cpuPercent.srcEtcd), fmt(s.cpuPercent.dstEtcd),
        fmt(s.cpuPercent.bench), fmt(s.cpuPercent.machineBusy),
      ]);
    }
    if (m.error) rows.push([m.mode, 'ERROR', m.error.split('\n')[0]!.slice(0, 80), ...head.slice(3).map(() => '')]);
  }
  out += 'Steps (delays in ms: canary arrival on the destination − source ack; CPU in % of one core, busy% of the whole machine)\n';
  out += pad(rows);
  const cu = r.modes.filter((m) => m.catchup).map((m) => m.catchup!);
  if (cu.length) {
    out += '\nCatch-up (backlog written while the mirror was stopped)\n';
    out += pad([
      ['mode', 'events', 'after tailing', 'after spawn', 'events/s', 'OOW', 'RSS MB', 'note'],
      ...cu.map((c) => [
        c.mode, String(c.events), c.fromTailingMs === null ? '-' : `${c.fromTailingMs} ms`, c.totalMs === null ? '-' : `${c.totalMs} ms`,
        fmt(c.eventsPerSecond), String(c.outOfWindow), fmt(c.maxRssMb), c.error ?? '',
      ]),
    ], [0, 7]);
  }
  if (r.reload) {
    const rl = r.reload;
    out += `\nReload of ${rl.keys} keys (source filled in ${rl.fill.seconds} s by ${rl.fill.concurrency} writers)\n`;
    out += pad([
      ['mode', 'seconds', 'keys/s', 'spawn→tailing', 'dst keys', 'RSS MB', 'CPU%', 'vs one-at-a-time'],
      ...rl.modes.map((m) => [
        m.mode, fmt(m.seconds, 2), fmt(m.keysPerSecond, 0), m.wallMs === null ? '-' : `${m.wallMs} ms`, fmt(m.destinationKeys, 0),
        fmt(m.maxRssMb), fmt(m.cpuPercent), rl.speedup[m.mode] === null || rl.speedup[m.mode] === undefined ? '-' : `${rl.speedup[m.mode]}x`,
      ]),
    ], [0]);
    if (rl.baseline) {
      out += `baseline one at a time: ${rl.baseline.keysWritten} keys in ${rl.baseline.seconds} s = ${rl.baseline.keysPerSecond} keys/s` +
        (rl.baseline.extrapolated ? ` (extrapolated: ${rl.baseline.secondsForAllKeys} s for ${rl.keys})` : '') + '\n';
    }
  }
  out += '\nTargets\n';
  for (const [name, t] of Object.entries(r.targets)) {
    const v = t as { met?: boolean | null; summary?: string };
    out += `  ${v.met === true ? 'MET   ' : v.met === false ? 'MISSED' : 'n/a   '} ${name}: ${v.summary ?? ''}\n`;
  }
  for (const m of r.modes) {
    if (m.mirrorProblemCount > 0) out += `\n${m.mode}: ${m.mirrorProblemCount} mirror log lines at warn level or above (first ones in the JSON; log ${m.mirrorLog})\n`;
  }
  return out;
}

/** Highest rate of an unbroken run of 'ok' steps from the lowest rate up. */
function sustained(steps: StepResult[]): StepResult | null {
  let best: StepResult | null = null;
  for (const s of [...steps].sort((a, b) => a.rate - b.rate)) {
    if (s.verdict !== 'ok') break;
    best = s;
  }
  return best;
}

export function evaluateTargets(r: BenchResults): Record<string, unknown> {
  const rtt = r.options.rttMs as number;
  const mode = (name: Mode) => r.modes.find((m) => m.mode === name);
  const pipe = mode('pipeline');
  const sync = mode('sync');
  const out: Record<string, unknown> = {};

  if (pipe && pipe.steps.length) {
    const best = sustained(pipe.steps);
    const syncBest = sync ? sustained(sync.steps) : null;
    const syncCeiling = sync?.catchup?.eventsPerSecond ?? null;
    const at3000 = pipe.steps.filter((s) => s.rate >= 3000);
    // Full: a step of >= 3000 put/s that the source acknowledged (>= 95 % of 3000/s) and the mirror handled cleanly.
    const full = at3000.filter((s) => s.verdict === 'ok' && s.antagonist.achievedRate >= 0.95 * 3000);
    // Saturated: the source acknowledged less than 95 % of what was scheduled (the local etcd pair or the cores).
    const saturated = at3000.filter((s) => s.antagonist.achievedRate < 0.95 * s.rate);
    const failed = at3000.filter((s) => s.verdict !== 'ok');
    const achieved = best?.antagonist.achievedRate ?? 0;
    let met: boolean | null = null;
    let how = '';
    if (at3000.length) {
      if (full.length) {
        met = true;
        const top = full[full.length - 1]!;
        how =
          `sustained ${top.antagonist.achievedRate} put/s (step ${top.rate}/s${top.antagonist.achievedRate < 0.95 * top.rate ? ', all the source acknowledged' : ''}) ` +
          'with 0 missing canaries, no out-of-window, caught up';
      } else if (saturated.length && saturated.every((s) => s.verdict === 'ok')) {
        met = true;
        how = `the source acknowledged only ${saturated.map((s) => `${s.antagonist.achievedRate}/s of ${s.rate}/s`).join(', ')} and the mirror kept up with all of it`;
      } else {
        met = false;
        how = `no clean step at >= 3000 put/s`;
      }
      if (failed.length) {
        how += `; not ok: ${failed.map((s) => `${s.rate}/s (achieved ${s.antagonist.achievedRate}/s${s.antagonist.achievedRate < 0.95 * s.rate ? ', source saturated' : ''}): ${s.verdict}`).join(', ')}`;
      }
    } else how = 'no step at >= 3000 put/s was run';
    out.sustain3000 = {
      met,
      pipelineSustainedStep: best?.rate ?? null,
      pipelineSustainedAchieved: best?.antagonist.achievedRate ?? null,
      syncSustainedStep: syncBest?.rate ?? null,
      syncCatchupEventsPerSecond: syncCeiling,
      ratioToSyncSustainedStep: best && syncBest ? Math.round((achieved / syncBest.antagonist.achievedRate) * 10) / 10 : null,
      ratioToSyncCeiling: best && syncCeiling ? Math.round((achieved / syncCeiling) * 10) / 10 : null,
      summary:
        how +
        (syncBest ? `; sync sustained ${syncBest.rate}/s` : sync ? '; sync sustained no step' : '') +
        (syncCeiling ? `, sync ceiling (catch-up) ${syncCeiling} events/s → ${best && syncCeiling ? Math.round((achieved / syncCeiling) * 10) / 10 : '-'}x` : ''),
    };
    const limit = rtt / 2 + 5;
    const upTo1000 = pipe.steps.filter((s) => s.rate <= 1000);
    const worst = upTo1000.reduce<StepResult | null>((w, s) => ((s.canary.delayMs.p99 ?? Infinity) > (w?.canary.delayMs.p99 ?? -Infinity) ? s : w), null);
    out.canaryP99 = {
      met: upTo1000.length ? upTo1000.every((s) => s.canary.delayMs.p99 !== null && s.canary.delayMs.p99 <= limit && s.canary.missing === 0) : null,
      limitMs: limit,
      p99ByRate: Object.fromEntries(upTo1000.map((s) => [s.rate, s.canary.delayMs.p99])),
      summary: upTo1000.length
        ? `limit ${limit} ms (one-way ${rtt / 2} + 5); pipeline p99 ${upTo1000.map((s) => `${fmt(s.canary.delayMs.p99)} ms @${s.rate}/s`).join(', ')}` +
          (worst ? `; worst @${worst.rate}/s` : '')
        : 'no pipeline step at <= 1000 put/s',
    };
  }
  if (r.reload) {
    const rl = r.reload;
    const p = rl.modes.find((m) => m.mode === 'pipeline') ?? rl.modes[0];
    const speedup = p ? rl.speedup[p.mode] ?? null : null;
    out.reload10x = {
      met: speedup === null ? null : speedup >= 10,
      summary: p
        ? `${p.mode}: ${fmt(p.keysPerSecond, 0)} keys/s vs ${fmt(rl.baseline?.keysPerSecond, 0)} keys/s one at a time → ${fmt(speedup)}x` +
          (rl.baseline?.extrapolated ? ' (baseline extrapolated)' : '')
        : 'no reload result',
    };
  }
  let maxRss = 0;
  const where: string[] = [];
  const note = (v: number | null | undefined, label: string) => {
    if (v === null || v === undefined) return;
    if (v > maxRss) {
      maxRss = v;
      where[0] = label;
    }
  };
  for (const m of r.modes) {
    for (const s of m.steps) note(s.mirror.maxRssMb, `${m.mode} ${s.rate}/s`);
    note(m.catchup?.maxRssMb, `${m.mode} catch-up`);
  }
  for (const m of r.reload?.modes ?? []) note(m.maxRssMb, `${m.mode} reload`);
  out.rss200 = {
    met: maxRss > 0 ? maxRss <= 200 : null,
    maxMb: maxRss || null,
    summary: maxRss ? `max mirror RSS ${fmt(maxRss)} MB (${where[0]}), sampled every 0.25–0.5 s` : 'no RSS samples',
  };
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// SVG: x = achieved put/s (log), y = canary delay ms (log); p99 solid, p50 dashed; one colour per mode.

const COLORS: Record<Mode, string> = { pipeline: '#1f6fb4', sync: '#c9302c' };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function renderSvg(r: BenchResults): string {
  const W = 820;
  const H = 500;
  const L = 70;
  const R = 180;
  const T = 50;
  const B = 60;
  const rtt = r.options.rttMs as number;
  const steps = r.modes.flatMap((m) => m.steps);
  const xs = steps.map((s) => Math.max(1, s.antagonist.achievedRate));
  const ys = steps.flatMap((s) => [s.canary.delayMs.p50, s.canary.delayMs.p99]).filter((v): v is number => v !== null && v > 0);
  ys.push(rtt / 2 + 5);
  const x0 = Math.floor(Math.log10(Math.min(...xs, 10)));
  const x1 = Math.max(x0 + 1, Math.ceil(Math.log10(Math.max(...xs, 10))));
  const y0 = Math.floor(Math.log10(Math.max(0.1, Math.min(...ys))));
  const y1 = Math.max(y0 + 1, Math.ceil(Math.log10(Math.max(...ys))));
  const px = (v: number) => L + ((Math.log10(Math.max(v, 10 ** x0)) - x0) / (x1 - x0)) * (W - L - R);
  const py = (v: number) => T + (1 - (Math.log10(Math.max(v, 10 ** y0)) - y0) / (y1 - y0)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  parts.push(`<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(`etcd-mirror: canary delay vs achieved write rate, RTT ${rtt} ms`)}</text>`);
  parts.push(`<text x="${L}" y="38" fill="#555">${esc(`${r.startedAt.slice(0, 19)}Z, ${r.machine.nproc} cores; delay = arrival on destination − source ack`)}</text>`);
  // Grid and axes.
  for (let d = x0; d <= x1; d++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** d;
      if (Math.log10(v) > x1 + 1e-9) continue;
      const x = px(v);
      parts.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
      if (k === 1) parts.push(`<text x="${x}" y="${H - B + 16}" text-anchor="middle">${v >= 1000 ? `${v / 1000}k` : v}</text>`);
    }
  }
  for (let d = y0; d <= y1; d++) {
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** d;
      if (Math.log10(v) > y1 + 1e-9) continue;
      const y = py(v);
      parts.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
      parts.push(`<text x="${L - 6}" y="${y + 4}" text-anchor="end" fill="${k === 1 ? '#000' : '#888'}">${+v.toPrecision(3)}</text>`);
    }
  }
  parts.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">achieved antagonist put/s (log)</text>`);
  parts.push(`<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">canary delay, ms (log)</text>`);
  // Target line.
  const target = rtt / 2 + 5;
  parts.push(`<line x1="${L}" y1="${py(target)}" x2="${W - R}" y2="${py(target)}" stroke="#2a2" stroke-dasharray="2 3"/>`);
  parts.push(`<text x="${W - R - 4}" y="${py(target) - 4}" text-anchor="end" fill="#2a2">${esc(`target p99 ≤ ${target} ms (≤ 1000 put/s)`)}</text>`);
  // Series.
  let ly = T + 10;
  for (const [modeIndex, m] of r.modes.entries()) {
    const color = COLORS[m.mode];
    const pts = [...m.steps].sort((a, b) => a.antagonist.achievedRate - b.antagonist.achievedRate);
    // Only steps whose every canary arrived have a delay distribution; with missing canaries the seen ones only
    // give a lower bound (hollow point, not joined), and a step the mirror died in is marked at the top.
    const complete = (s: StepResult) => s.canary.missing === 0 && s.canary.seen > 0;
    const x = (s: StepResult) => px(Math.max(1, s.antagonist.achievedRate));
    for (const [key, dash] of [['p99', ''], ['p50', '6 4']] as const) {
      const line = pts.filter((s) => complete(s) && s.canary.delayMs[key] !== null).map((s) => `${x(s).toFixed(1)},${py(s.canary.delayMs[key]!).toFixed(1)}`);
      if (line.length > 1) parts.push(`<polyline points="${line.join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
      for (const s of pts) {
        const v = s.canary.delayMs[key];
        if (v === null || (!complete(s) && s.mirror.died)) continue;
        const solid = complete(s) && s.verdict === 'ok';
        const what = complete(s) ? `${key} ${v} ms` : `${key} of the ${s.canary.seen} canaries that arrived: ${v} ms (a lower bound: ${s.canary.missing} missing)`;
        parts.push(
          `<circle cx="${x(s).toFixed(1)}" cy="${py(v).toFixed(1)}" r="${key === 'p99' ? 4 : 3}" ` +
            `fill="${solid ? color : '#fff'}" stroke="${color}" stroke-width="2"><title>${esc(`${m.mode} step ${s.rate}/s: achieved ${s.antagonist.achievedRate}/s, ${what}, ${s.verdict}`)}</title></circle>`,
        );
      }
    }
    // Steps that were not ok: the reason at the top of the plot.
    for (const [i, s] of pts.filter((s) => s.verdict !== 'ok').entries()) {
      const label = s.verdict === 'missing canaries' ? `${s.canary.missing} missing` : s.verdict;
      const lx = Math.min(W - R - 45, Math.max(L + 45, x(s)));
      const row = modeIndex * 2 + (i % 2);
      parts.push(`<text x="${lx.toFixed(1)}" y="${T + 14 + row * 12}" text-anchor="middle" fill="${color}" font-size="10">✕ ${esc(`${label} @${s.rate}/s`)}</text>`);
    }
    parts.push(`<line x1="${W - R + 14}" y1="${ly}" x2="${W - R + 44}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${W - R + 50}" y="${ly + 4}">${m.mode} p99</text>`);
    ly += 18;
    parts.push(`<line x1="${W - R + 14}" y1="${ly}" x2="${W - R + 44}" y2="${ly}" stroke="${color}" stroke-width="2" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${W - R + 50}" y="${ly + 4}">${m.mode} p50</text>`);
    ly += 24;
  }
  const legend = ['hollow: step not ok, or a', 'lower bound (canaries', 'missing; not joined)', '✕ at the top: why a step', 'was not ok'];
  legend.forEach((t, i) => parts.push(`<text x="${W - R + 14}" y="${ly + 4 + i * 14}" fill="#555" font-size="11">${esc(t)}</text>`));
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
