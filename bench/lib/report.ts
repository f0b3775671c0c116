// Output: the stdout table, the target evaluation stored in the JSON, and a hand-drawn SVG plot.
import { BACKLOG_EVENTS, HISTORY_WINDOW_EVENTS, type BenchResults, type Mode, type StepResult } from './types.js';

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
    'lagMax', 'caughtUp', 'mCPU%', 'RSS MB', 'wr/ev', 'src%', 'dst%', 'bench%', 'busy%', 'other%',
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
        fmt(s.cpuPercent.bench), fmt(s.cpuPercent.machineBusy), fmt(s.cpuPercent.other),
      ]);
    }
    if (m.error) rows.push([m.mode, 'ERROR', m.error.split('\n')[0]!.slice(0, 80), ...head.slice(3).map(() => '')]);
  }
  out += 'Steps (delays in ms: canary arrival on the destination − source ack; CPU in % of one core; busy% and other% (work not the bench\'s) of the whole machine)\n';
  out += pad(rows);
  for (const m of r.modes) {
    if (m.skippedRates?.length) out += `${m.mode}: steps not run (--sync-max-rate): ${m.skippedRates.join(', ')} put/s\n`;
  }

  const withOrdering = r.modes.filter((m) => m.steps.some((s) => s.ordering || s.throughput));
  if (withOrdering.length) {
    out += '\nOrdering and destination throughput per step (ev/s, dstW/s: over the step itself; reordering: over the step and its drain)\n';
    out += pad([
      ['mode', 'verdict', 'put/s', 'achieved', 'ev/s', 'dstW/s', 'backlog ev/s', 'drain ev/s', 'lagMax', 'minHead', 'reordering', 'reord s', 'reord wr', 'episodes', 'OOW', 'miss', 'p50', 'p99'],
      ...withOrdering.flatMap((m) =>
        m.steps.map((s) => [
          m.mode, s.verdict, String(s.rate), fmt(s.antagonist.achievedRate), fmt(s.throughput?.eventsAppliedPerSecond),
          fmt(s.throughput?.dstWritesPerSecond),
          s.throughput?.backloggedEventsPerSecond == null ? '-' : `${fmt(s.throughput.backloggedEventsPerSecond)} (${fmt(s.throughput.backloggedSeconds)} s)`,
          s.throughput?.drainReplayEventsPerSecond == null ? '-' : `${fmt(s.throughput.drainReplayEventsPerSecond)} (${s.throughput.drainBacklogEvents} in ${s.throughput.drainReplayMs} ms)`,
          fmt(s.mirror.maxLagEvents, 0), s.mirror.maxLagEvents === null ? '-' : String(Math.max(0, HISTORY_WINDOW_EVENTS - s.mirror.maxLagEvents)), reorderingWord(s), fmt(s.ordering?.reorderingSeconds, 2), fmt(s.ordering?.reorderedWrites, 0),
          fmt(s.ordering?.episodes, 0), String(s.mirror.outOfWindow), String(s.canary.missing), fmt(s.canary.delayMs.p50), fmt(s.canary.delayMs.p99),
        ]),
      ),
    ], [0, 1, 6, 7, 10]);
  }

  const cu = r.modes.filter((m) => m.catchup).map((m) => m.catchup!);
  if (cu.length) {
    out += '\nCatch-up (backlog written while the mirror was stopped)\n';
    out += pad([
      ['mode', 'events', 'after tailing', 'after spawn', 'events/s', 'dst writes', 'reord s', 'reord wr', 'OOW', 'RSS MB', 'note'],
      ...cu.map((c) => [
        c.mode, String(c.events), c.fromTailingMs === null ? '-' : `${c.fromTailingMs} ms`, c.totalMs === null ? '-' : `${c.totalMs} ms`,
        fmt(c.eventsPerSecond), fmt(c.dstIndexGrowth, 0), fmt(c.reorderingSeconds, 3), fmt(c.reorderedWrites, 0), String(c.outOfWindow),
        fmt(c.maxRssMb), c.error ?? '',
      ]),
    ], [0, 10]);
  }

  if (r.writeBaseline?.length || r.strictCeiling) {
    out += '\nOne-connection sequential write baseline (fresh etcd started like the destinations; each PUT waits for the previous answer)\n';
    for (const b of r.writeBaseline ?? []) {
      out += `  ${b.when.padEnd(5)} ${b.at.slice(11, 19)}Z: ${b.writes} writes in ${b.seconds} s = ${fmt(b.writesPerSecond)} writes/s ` +
        `(answer p50 ${fmt(b.latencyMs.p50, 2)} ms, p99 ${fmt(b.latencyMs.p99, 2)} ms, ${b.failed} failed; etcd CPU ${fmt(b.cpuPercent?.etcd)}%, ` +
        `machine ${fmt(b.cpuPercent?.machineBusy)}% busy, other work ${fmt(b.cpuPercent?.other)}%)\n`;
    }
    const c = r.strictCeiling;
    if (c) {
      const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)} %`);
      out += `Strict mode against the baseline (${fmt(c.baselineWritesPerSecond)} writes/s, the higher of the two):\n`;
      out += c.drain
        ? `  replay of the backlog left at the end of the ${c.drain.rate} put/s step (antagonist stopped): ${c.drain.backlogEvents} events in ` +
          `${c.drain.replayMs} ms = ${fmt(c.drain.eventsPerSecond)} events/s → ${pct(c.drain.ratio)} of the baseline\n`
        : '  no strict step left >= 1 s of backlog to replay after it (it kept up everywhere, or the steps were skipped)\n';
      out += c.step
        ? `  backlogged replay during the ${c.step.rate} put/s step (antagonist writing): ${fmt(c.step.eventsPerSecond)} events/s over ${fmt(c.step.backloggedSeconds)} s ` +
          `(destination writes/s over that whole step ${fmt(c.step.dstWritesPerSecond)}) → ${pct(c.step.ratio)} of the baseline\n`
        : '  no strict step had >= 1 s of backlogged samples during the step\n';
      out += c.catchup
        ? `  catch-up of ${c.catchup.events} events: ${fmt(c.catchup.eventsPerSecond)} events/s → ${pct(c.catchup.ratio)} of the baseline\n`
        : '  no strict catch-up result\n';
    }
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
    const v = t as { met?: boolean | null; summary?: string; earlier?: boolean };
    out += `  ${v.met === true ? 'MET   ' : v.met === false ? 'MISSED' : 'n/a   '} ${name}${v.earlier ? ' (earlier target)' : ''}: ${v.summary ?? ''}\n`;
  }
  for (const m of r.modes) {
    if (m.mirrorProblemCount > 0) out += `\n${m.mode}: ${m.mirrorProblemCount} mirror log lines at warn level or above (first ones in the JSON; log ${m.mirrorLog})\n`;
  }
  return out;
}

/** 'always' (every sample and both ends), 'yes' (at some point), 'no', '-' (not reported: older mirror or file). */
function reorderingWord(s: StepResult): string {
  const o = s.ordering;
  if (!o || o.active === null) return '-';
  if (!o.active) return 'no';
  if (o.activeAtStart && o.activeAtEnd && o.activeSampleShare === 1) return 'always';
  return 'yes';
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

/** No out-of-window transition, no 401, and the sampled lag stayed below the 1000-event window (headroom > 0). */
const keptWindow = (s: StepResult) =>
  s.mirror.outOfWindow === 0 && s.mirror.errors401 === 0 && !s.mirror.died && !s.mirror.statesSeen.includes('outOfWindow') &&
  (s.mirror.maxLagEvents ?? 0) < HISTORY_WINDOW_EVENTS;

/** The issue's targets for the default (adaptive) mode at RTT 30 ms, strict ≥ 85 % of the baseline, and two earlier ones. */
export function evaluateTargets(r: BenchResults): Record<string, unknown> {
  const rtt = r.options.rttMs as number;
  const rttNote = rtt === 30 ? '' : ` (the targets are stated for RTT 30 ms; this run used ${rtt} ms)`;
  const mode = (name: Mode) => r.modes.find((m) => m.mode === name);
  const adaptive = mode('adaptive');
  const out: Record<string, unknown> = {};
  const reord = (s: StepResult) =>
    s.ordering ? `reordering ${fmt(s.ordering.reorderingSeconds, 2)} s, ${fmt(s.ordering.reorderedWrites, 0)} reordered writes` : 'reordering not reported';

  if (adaptive && adaptive.steps.length) {
    const steps = [...adaptive.steps].sort((a, b) => a.rate - b.rate);
    // ≥ 2,000 put/s sustained: every step up to one of >= 2000/s ok (0 missing canaries, no out-of-window,
    // caught up, destination equal), with the source acknowledging >= 95 % of 2000/s.
    const best = sustained(steps);
    const from2000 = steps.filter((s) => s.rate >= 2000);
    out.sustain2000 = {
      met: from2000.length ? best !== null && best.rate >= 2000 && best.antagonist.achievedRate >= 0.95 * 2000 : null,
      sustainedStep: best?.rate ?? null,
      sustainedAchieved: best?.antagonist.achievedRate ?? null,
      summary:
        (from2000.length
          ? `adaptive sustained ${best ? `${best.rate} put/s (achieved ${best.antagonist.achievedRate}/s)` : 'no step'}; ` +
            from2000
              .map((s) => `${s.rate}/s: ${s.verdict}, ${s.canary.missing} missing, OOW ${s.mirror.outOfWindow}, lag max ${fmt(s.mirror.maxLagEvents, 0)}, ${reord(s)}`)
              .join('; ')
          : 'no adaptive step at >= 2000 put/s was run') + rttNote,
    };
    const limit = rtt / 2 + 5;
    const at1000 = steps.find((s) => s.rate === 1000);
    const upTo1000 = steps.filter((s) => s.rate <= 1000);
    out.canaryP99At1000 = {
      met: at1000 ? at1000.canary.delayMs.p99 !== null && at1000.canary.delayMs.p99 <= limit && at1000.canary.missing === 0 : null,
      limitMs: limit,
      p99ByRate: Object.fromEntries(upTo1000.map((s) => [s.rate, s.canary.delayMs.p99])),
      summary: at1000
        ? `limit ${limit} ms (one-way ${rtt / 2} + 5); adaptive p99 ${fmt(at1000.canary.delayMs.p99)} ms at 1000/s (p50 ${fmt(at1000.canary.delayMs.p50)}, ` +
          `${at1000.canary.missing} missing)` +
          (upTo1000.length > 1 ? `; lower rates: ${upTo1000.filter((s) => s !== at1000).map((s) => `${fmt(s.canary.delayMs.p99)} ms @${s.rate}/s`).join(', ')}` : '')
        : 'no adaptive step at 1000 put/s was run',
    };
  }
  const cu = adaptive?.catchup;
  if (cu) {
    out.catchup900In1s = {
      met: cu.events >= 900 ? cu.fromTailingMs !== null && cu.fromTailingMs <= 1000 && cu.outOfWindow === 0 && !cu.error : null,
      fromTailingMs: cu.fromTailingMs,
      summary:
        `adaptive: ${cu.events} events replayed ${cu.fromTailingMs ?? '-'} ms after 'tailing the source' (${cu.totalMs ?? '-'} ms after spawn), ` +
        `OOW ${cu.outOfWindow}, reordering ${fmt(cu.reorderingSeconds, 3)} s${cu.error ? `; ${cu.error}` : ''}` +
        (cu.events < 900 ? ' (backlog smaller than 900: not evaluated)' : '') + rttNote,
    };
  }
  if (adaptive && adaptive.steps.length) {
    const at3000 = adaptive.steps.find((s) => s.rate === 3000) ?? adaptive.steps.filter((s) => s.rate >= 3000).sort((a, b) => a.rate - b.rate)[0];
    const strictAt = mode('strict')?.steps.find((s) => s.rate === at3000?.rate);
    const ceiling = r.strictCeiling?.drain?.eventsPerSecond ?? r.strictCeiling?.step?.eventsPerSecond ?? null;
    out.window3000 = {
      met: at3000 ? keptWindow(at3000) : null,
      step: at3000?.rate ?? null,
      reorderingSeconds: at3000?.ordering?.reorderingSeconds ?? null,
      reorderedWrites: at3000?.ordering?.reorderedWrites ?? null,
      summary: at3000
        ? `adaptive ${at3000.rate}/s (achieved ${at3000.antagonist.achievedRate}/s): ` +
          (keptWindow(at3000)
            ? `kept the window (lag max ${fmt(at3000.mirror.maxLagEvents, 0)}, headroom min ${HISTORY_WINDOW_EVENTS - (at3000.mirror.maxLagEvents ?? 0)})`
            : `did not keep the window (out-of-window transitions ${at3000.mirror.outOfWindow}, 401s ${at3000.mirror.errors401}, lag max ${fmt(at3000.mirror.maxLagEvents, 0)} of ${HISTORY_WINDOW_EVENTS})`) +
          ', ' +
          `${reord(at3000)}, ${fmt(at3000.ordering?.episodes, 0)} episodes, ${at3000.canary.missing} missing canaries, ` +
          `canary p99 ${fmt(at3000.canary.delayMs.p99)} ms, verdict ${at3000.verdict}` +
          (strictAt ? `; strict at ${strictAt.rate}/s: ${strictAt.verdict}, OOW ${strictAt.mirror.outOfWindow}` : '') +
          (ceiling !== null ? `; strict replayed ${fmt(ceiling)} events/s` : '') + rttNote
        : 'no adaptive step at >= 3000 put/s was run',
    };
  }
  const c = r.strictCeiling;
  if (c) {
    const pct = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)} %`);
    out.strict85OfBaseline = {
      met: c.drain?.ratio != null ? c.drain.ratio >= 0.85 : null,
      ratio: c.drain?.ratio ?? null,
      summary:
        `baseline ${(r.writeBaseline ?? []).map((b) => `${b.when} ${fmt(b.writesPerSecond)}`).join(', ') || '-'} writes/s (one connection, sequential); ` +
        (c.drain
          ? `strict replayed the backlog left by the ${c.drain.rate}/s step (${c.drain.backlogEvents} events in ${c.drain.replayMs} ms) at ` +
            `${fmt(c.drain.eventsPerSecond)} events/s = ${pct(c.drain.ratio)}`
          : 'no strict step left a backlog to replay') +
        (c.step ? `; during the ${c.step.rate}/s step (antagonist writing) ${fmt(c.step.eventsPerSecond)} events/s = ${pct(c.step.ratio)}` : '') +
        (c.catchup ? `; strict catch-up ${fmt(c.catchup.eventsPerSecond)} events/s = ${pct(c.catchup.ratio)}` : ''),
    };
  }
  if (r.reload) {
    const rl = r.reload;
    const p = rl.modes.find((m) => m.mode === 'adaptive') ?? rl.modes[0];
    const speedup = p ? rl.speedup[p.mode] ?? null : null;
    out.reload10x = {
      earlier: true,
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
    earlier: true,
    met: maxRss > 0 ? maxRss <= 200 : null,
    maxMb: maxRss || null,
    summary: maxRss ? `max mirror RSS ${fmt(maxRss)} MB (${where[0]}), sampled every 0.25–0.5 s` : 'no RSS samples',
  };
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// SVG, two panels sharing x = achieved antagonist put/s (log); one colour per mode.
//   top:    canary delay ms (log), p99 solid, p50 dashed, the p99 target line
//   bottom: events the mirror applied per second during the step (log), the one-connection sequential baseline,
//           and y = x + 10 (keeping up with the antagonist plus the canaries); squares: reordering in the step

const COLORS: Record<string, string> = { adaptive: '#1f6fb4', pipeline: '#1f6fb4', strict: '#2a9d3a', key: '#e08a00', sync: '#c9302c' };
const colorOf = (mode: string) => COLORS[mode] ?? '#666';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Panel {
  top: number;
  bottom: number;
  y0: number;
  y1: number;
  py: (v: number) => number;
}

export function renderSvg(r: BenchResults): string {
  const W = 860;
  const L = 70;
  const R = 200;
  const rtt = r.options.rttMs as number;
  const steps = r.modes.flatMap((m) => m.steps);
  const hasThroughput = steps.some((s) => s.throughput?.eventsAppliedPerSecond != null);
  const H = hasThroughput ? 900 : 500;
  const xs = steps.map((s) => Math.max(1, s.antagonist.achievedRate));
  const x0 = Math.floor(Math.log10(Math.min(...xs, 10)));
  const x1 = Math.max(x0 + 1, Math.ceil(Math.log10(Math.max(...xs, 10))));
  const px = (v: number) => L + ((Math.log10(Math.max(v, 10 ** x0)) - x0) / (x1 - x0)) * (W - L - R);
  const panel = (top: number, bottom: number, values: number[]): Panel => {
    const y0 = Math.floor(Math.log10(Math.max(0.1, Math.min(...values))));
    const y1 = Math.max(y0 + 1, Math.ceil(Math.log10(Math.max(...values))));
    return { top, bottom, y0, y1, py: (v: number) => top + (1 - (Math.log10(Math.max(v, 10 ** y0)) - y0) / (y1 - y0)) * (bottom - top) };
  };
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  parts.push(`<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(`etcd-mirror bench, RTT ${rtt} ms: canary delay and destination throughput`)}</text>`);
  parts.push(`<text x="${L}" y="38" fill="#555">${esc(`${r.startedAt.slice(0, 19)}Z, ${r.machine.nproc} cores; modes ${r.modes.map((m) => m.mode).join(', ')}`)}</text>`);

  const frame = (p: Panel, yLabel: string, title: string) => {
    for (let d = x0; d <= x1; d++) {
      for (const k of [1, 2, 5]) {
        const v = k * 10 ** d;
        if (Math.log10(v) > x1 + 1e-9) continue;
        const x = px(v);
        parts.push(`<line x1="${x}" y1="${p.top}" x2="${x}" y2="${p.bottom}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
        if (k === 1) parts.push(`<text x="${x}" y="${p.bottom + 16}" text-anchor="middle">${v >= 1000 ? `${v / 1000}k` : v}</text>`);
      }
    }
    for (let d = p.y0; d <= p.y1; d++) {
      for (const k of [1, 2, 5]) {
        const v = k * 10 ** d;
        if (Math.log10(v) > p.y1 + 1e-9) continue;
        const y = p.py(v);
        parts.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
        parts.push(`<text x="${L - 6}" y="${y + 4}" text-anchor="end" fill="${k === 1 ? '#000' : '#888'}">${v >= 10_000 ? `${v / 1000}k` : +v.toPrecision(3)}</text>`);
      }
    }
    parts.push(`<rect x="${L}" y="${p.top}" width="${W - L - R}" height="${p.bottom - p.top}" fill="none" stroke="#333"/>`);
    parts.push(`<text x="${L}" y="${p.top - 8}" font-weight="bold">${esc(title)}</text>`);
    parts.push(`<text x="${(L + W - R) / 2}" y="${p.bottom + 34}" text-anchor="middle">achieved antagonist put/s (log)</text>`);
    parts.push(`<text transform="translate(18 ${(p.top + p.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  };
  const x = (s: StepResult) => px(Math.max(1, s.antagonist.achievedRate));

  // Top panel: canary delay.
  const ys = steps.flatMap((s) => [s.canary.delayMs.p50, s.canary.delayMs.p99]).filter((v): v is number => v !== null && v > 0);
  const target = rtt / 2 + 5;
  ys.push(target);
  const top = panel(70, 440, ys);
  frame(top, 'canary delay, ms (log)', 'canary delay = arrival on the destination − source ack');
  parts.push(`<line x1="${L}" y1="${top.py(target)}" x2="${W - R}" y2="${top.py(target)}" stroke="#7b3fa0" stroke-dasharray="2 3"/>`);
  parts.push(`<text x="${W - R - 4}" y="${top.py(target) - 4}" text-anchor="end" fill="#7b3fa0">${esc(`target p99 ≤ ${target} ms at 1000 put/s`)}</text>`);
  let ly = top.top + 10;
  const labelRows: [number, number][][] = [];
  for (const m of r.modes) {
    const color = colorOf(m.mode);
    const pts = [...m.steps].sort((a, b) => a.antagonist.achievedRate - b.antagonist.achievedRate);
    // Only steps whose every canary arrived have a delay distribution; with missing canaries the seen ones only
    // give a lower bound (hollow point, not joined), and a step the mirror died in is marked at the top.
    const complete = (s: StepResult) => s.canary.missing === 0 && s.canary.seen > 0;
    for (const [key, dash] of [['p99', ''], ['p50', '6 4']] as const) {
      const line = pts.filter((s) => complete(s) && s.canary.delayMs[key] !== null).map((s) => `${x(s).toFixed(1)},${top.py(s.canary.delayMs[key]!).toFixed(1)}`);
      if (line.length > 1) parts.push(`<polyline points="${line.join(' ')}" fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
      for (const s of pts) {
        const v = s.canary.delayMs[key];
        if (v === null || (!complete(s) && s.mirror.died)) continue;
        const solid = complete(s) && s.verdict === 'ok';
        const what = complete(s) ? `${key} ${v} ms` : `${key} of the ${s.canary.seen} canaries that arrived: ${v} ms (a lower bound: ${s.canary.missing} missing)`;
        parts.push(
          `<circle cx="${x(s).toFixed(1)}" cy="${top.py(v).toFixed(1)}" r="${key === 'p99' ? 4 : 3}" ` +
            `fill="${solid ? color : '#fff'}" stroke="${color}" stroke-width="2"><title>${esc(`${m.mode} step ${s.rate}/s: achieved ${s.antagonist.achievedRate}/s, ${what}, ${s.verdict}`)}</title></circle>`,
        );
      }
    }
    // Steps that were not ok: the reason at the top of the panel, each in the first row where it overlaps no other.
    for (const s of pts.filter((s) => s.verdict !== 'ok')) {
      const text = `✕ ${s.verdict === 'missing canaries' ? `${s.canary.missing} missing` : s.verdict} @${s.rate}/s`;
      const half = text.length * 2.9 + 4;
      const lx = Math.min(W - R - half, Math.max(L + half, x(s)));
      let row = 0;
      while (labelRows[row]?.some(([a, b]) => lx - half < b && lx + half > a)) row++;
      (labelRows[row] ??= []).push([lx - half, lx + half]);
      parts.push(`<text x="${lx.toFixed(1)}" y="${top.top + 14 + row * 12}" text-anchor="middle" fill="${color}" font-size="10">${esc(text)}</text>`);
    }
    parts.push(`<line x1="${W - R + 14}" y1="${ly}" x2="${W - R + 44}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${W - R + 50}" y="${ly + 4}">${esc(m.mode)} p99</text>`);
    ly += 16;
    parts.push(`<line x1="${W - R + 14}" y1="${ly}" x2="${W - R + 44}" y2="${ly}" stroke="${color}" stroke-width="2" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${W - R + 50}" y="${ly + 4}">${esc(m.mode)} p50</text>`);
    ly += 22;
  }
  const legend = ['hollow: step not ok, or a', 'lower bound (canaries', 'missing; not joined)', '✕ at the top: why a step', 'was not ok'];
  legend.forEach((t, i) => parts.push(`<text x="${W - R + 14}" y="${ly + 4 + i * 14}" fill="#555" font-size="11">${esc(t)}</text>`));

  // Bottom panel: events applied per second during the step.
  if (hasThroughput) {
    const baselines = (r.writeBaseline ?? []).map((b) => b.writesPerSecond);
    const vs = steps
      .flatMap((s) => [s.throughput?.eventsAppliedPerSecond, s.throughput?.backloggedEventsPerSecond, s.throughput?.drainReplayEventsPerSecond])
      .filter((v): v is number => v !== null && v !== undefined && v > 0);
    const bottom = panel(510, 840, [...vs, ...baselines, ...xs.map((v) => v + 10)]);
    frame(bottom, 'events applied per second (log)', 'destination: events the mirror applied per second during the step');
    // y = x + 10: keeping up with the antagonist and the canaries.
    const diag: string[] = [];
    for (let i = 0; i <= 40; i++) {
      const v = 10 ** (x0 + ((x1 - x0) * i) / 40);
      diag.push(`${px(v).toFixed(1)},${bottom.py(v + 10).toFixed(1)}`);
    }
    parts.push(`<polyline points="${diag.join(' ')}" fill="none" stroke="#999" stroke-dasharray="2 3"/>`);
    parts.push(`<text x="${px(10 ** (x0 + (x1 - x0) * 0.15)).toFixed(1)}" y="${(bottom.py(10 ** (x0 + (x1 - x0) * 0.15) + 10) - 6).toFixed(1)}" fill="#777" font-size="11">keeping up (put/s + 10 canaries/s)</text>`);
    if (baselines.length) {
      const b = Math.max(...baselines);
      parts.push(`<line x1="${L}" y1="${bottom.py(b)}" x2="${W - R}" y2="${bottom.py(b)}" stroke="#000" stroke-dasharray="6 3"/>`);
      parts.push(`<text x="${L + 6}" y="${bottom.py(b) - 4}" fill="#000">${esc(`one-connection sequential baseline ${Math.round(b)} writes/s (85 %: ${Math.round(0.85 * b)})`)}</text>`);
      parts.push(`<line x1="${L}" y1="${bottom.py(0.85 * b)}" x2="${W - R}" y2="${bottom.py(0.85 * b)}" stroke="#000" stroke-opacity="0.35" stroke-dasharray="2 3"/>`);
    }
    let by = bottom.top + 10;
    for (const m of r.modes) {
      const color = colorOf(m.mode);
      const pts = [...m.steps].filter((s) => s.throughput?.eventsAppliedPerSecond != null && s.throughput.eventsAppliedPerSecond > 0)
        .sort((a, b) => a.antagonist.achievedRate - b.antagonist.achievedRate);
      const y = (s: StepResult) => bottom.py(s.throughput!.eventsAppliedPerSecond!);
      if (pts.length > 1) parts.push(`<polyline points="${pts.map((s) => `${x(s).toFixed(1)},${y(s).toFixed(1)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
      for (const s of pts) {
        const t = s.throughput!;
        const title = esc(
          `${m.mode} step ${s.rate}/s: achieved ${s.antagonist.achievedRate}/s, applied ${t.eventsAppliedPerSecond} events/s, destination ${t.dstWritesPerSecond ?? '-'} writes/s, ` +
            `backlogged ${t.backloggedEventsPerSecond ?? '-'} events/s over ${t.backloggedSeconds} s (drain: ${t.drainBacklogEvents ?? '-'} events in ${t.drainReplayMs ?? '-'} ms = ${t.drainReplayEventsPerSecond ?? '-'} events/s), reordering ${s.ordering?.reorderingSeconds ?? '-'} s, ${s.verdict}`,
        );
        const solid = s.verdict === 'ok';
        if (s.ordering?.active) {
          parts.push(`<rect x="${(x(s) - 4.5).toFixed(1)}" y="${(y(s) - 4.5).toFixed(1)}" width="9" height="9" fill="${solid ? color : '#fff'}" stroke="${color}" stroke-width="2"><title>${title}</title></rect>`);
        } else {
          parts.push(`<circle cx="${x(s).toFixed(1)}" cy="${y(s).toFixed(1)}" r="4" fill="${solid ? color : '#fff'}" stroke="${color}" stroke-width="2"><title>${title}</title></circle>`);
        }
        for (const [v, mark] of [[t.backloggedEventsPerSecond, '×'], [t.drainReplayEventsPerSecond, '+']] as const) {
          if (v === null || v === undefined || v <= 0) continue;
          parts.push(`<text x="${x(s).toFixed(1)}" y="${(bottom.py(v) + 4).toFixed(1)}" text-anchor="middle" fill="${color}" font-size="13"><title>${title}</title>${mark}</text>`);
        }
      }
      parts.push(`<line x1="${W - R + 14}" y1="${by}" x2="${W - R + 44}" y2="${by}" stroke="${color}" stroke-width="2"/>`);
      parts.push(`<text x="${W - R + 50}" y="${by + 4}">${esc(m.mode)} applied/s</text>`);
      by += 18;
    }
    const legend2 = [
      'square: reordering during', 'the step; circle: none', 'hollow: step not ok', `×: replay rate while ≥ ${BACKLOG_EVENTS}`,
      'events behind, in the step', '+: backlog at the step end', '÷ time to replay it'
    ];
    legend2.forEach((t, i) => parts.push(`<text x="${W - R + 14}" y="${by + 8 + i * 14}" fill="#555" font-size="11">${esc(t)}</text>`));
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
