import type { DstCeiling } from './types.js';
// Results of `npm run bench -- --src-api v3 --dst-api v3`, the goals, and the markdown table printed on stdout.
import type { Summary } from './stats.js';
import type { LoadSummary } from './v3-load.js';
import type { TreeDiff } from './v3-destination.js';
import type { PeerName } from './v3-peers.js';

export interface CeilingResult {
  when: 'before' | 'after';
  seconds: number;
  concurrency: number;
  valueBytes: number;
  load: LoadSummary;
  putsPerSecond: number;
  cpuPercent: Record<string, number | null>;
}

export interface OrderResult {
  phase: string;
  /** Acknowledged source puts of the phase. */
  acked: number;
  /** First arrivals on the destination mapped back to a source revision. */
  checked: number;
  inversions: number;
  /** Acknowledged, neither seen by the destination watch nor present on the destination; null: not caught up. */
  lost: number | null;
  /** Not seen by the watch but present on the destination. */
  presentUnobserved: number;
  /** Not on the destination yet when the bench stopped waiting (the peer had not caught up). */
  notAppliedYet: number;
  /** Puts of an already seen key (make-mirror's full copies). */
  repeats: number;
}

export interface CanaryResult {
  seconds: number;
  /** Canaries written every this many ms (absent in older results: 100). */
  everyMs?: number;
  /** --canary-fractions: the phase offered this fraction of the source's ceiling (background + canaries). */
  fraction?: number;
  background: LoadSummary;
  written: number;
  acked: number;
  seen: number;
  missing: number;
  presentUnobserved: number;
  /** Destination arrival − source ack, ms. */
  latencyMs: Summary;
  /** Destination arrival − send, ms. */
  fromSendMs: Summary;
  /** etcd-mirror: where an event's time goes inside the mirror over the phase, from its own histograms (bucket
   * upper bounds, ms): received → write sent, of it the mirror's own part (etcdmirror_event_overhead_seconds: not
   * the wait for the Txn in flight before it), and the destination write; the event-loop delay p99 (ms). */
  inside?: {
    waitP50: number | null;
    waitP99: number | null;
    overheadP50?: number | null;
    overheadP99?: number | null;
    writeP50: number | null;
    writeP99: number | null;
    loopDelayP99: number | null;
  } | null;
}

export interface BacklogResult {
  events: number;
  write: LoadSummary;
  sourceRevision: number;
  sourceKeys: number;
  /** How "the destination has everything" was decided. */
  criterion: string;
  /** From the restart's spawn until it had. */
  doneMs: number | null;
  /** etcd-mirror: from its first /state answer (process up) until done. */
  fromUpMs: number | null;
  /** Until the destination watch had seen every backlog key. */
  watchSawAllMs: number | null;
  /** Destination events during the catch-up (a full copy writes every key). */
  destinationWrites: number;
  diff: TreeDiff | null;
  statesSeen: string[];
  error: string | null;
}

export interface CompactionResult {
  eventsWhileStopped: number;
  compactRevision: number;
  outcome: string;
  resumed: boolean;
  exitCode: number | null;
  doneMs: number | null;
  statesSeen: string[];
  resyncLogged: boolean;
  destinationWrites: number;
  diff: TreeDiff | null;
  restartedAfter: string | null;
}

export interface SustainedResult {
  seconds: number;
  load: LoadSummary;
  /** The steady part, in seconds since the load started. */
  window: { from: number; to: number };
  sourcePutsPerSecond: number;
  destinationEventsPerSecond: number;
  percentOfCeiling: number | null;
  /** Destination events/s against the source's acknowledged puts/s over the same window. */
  percentOfSource: number | null;
  /** etcd-mirror: growth of /state appliedIndex (source revisions) per second over the window. */
  checkpointRevisionsPerSecond: number | null;
  destinationPerSecond: number[];
  /** From the end of sending until the destination watch had every acknowledged put; null: not within the wait. */
  caughtUpMs: number | null;
  behindAtEnd: number;
  waitedSeconds: number;
  cpuPercent: Record<string, number | null>;
  /** The peer's CPU from the load's start until it had applied everything (or the wait ended), in µs per event it
   * applied over that time: what mirroring one event costs, whatever the peer's pace. */
  cpuMicrosPerEvent: number | null;
}

export interface PeerResult {
  peer: PeerName;
  /** With --dst-commit-ms: one client putting one key at a time to the fresh destination, before the peer starts. */
  destinationOneAtATime?: DstCeiling | null;
  command: string[];
  logFile: string;
  readyMs: number | null;
  canary: CanaryResult | null;
  /** --canary-fractions: one canary phase per fraction of the source's ceiling, after the main one. */
  canaryFractions?: CanaryResult[];
  backlog: BacklogResult | null;
  compaction: CompactionResult | null;
  sustained: SustainedResult | null;
  order: OrderResult[];
  rssMb: { max: number | null; end: number | null };
  finalDiff: TreeDiff | null;
  processes: number;
  problems: { count: number; lines: unknown[] } | null;
  destinationWatch: { events: number; restarts: number; errors: string[] };
  error: string | null;
}

export interface Goal {
  metric: string;
  goal: string;
  value: number | string | null;
  met: boolean | null;
}

export interface V3BenchResults {
  version: 1;
  kind: 'v3';
  date: string;
  finishedAt: string;
  command: string;
  cores: number;
  machine: Record<string, unknown>;
  options: Record<string, unknown>;
  ceiling: CeilingResult | null;
  /** The same, shorter, after the peers (not used for the percentages: it shows the drift). */
  ceilingAfter: CeilingResult | null;
  peers: PeerResult[];
  goals: Goal[];
  notes: string[];
}

/** The canary interval of the fraction phases at `fr` (the first peer's). */
const p0Every = (r: V3BenchResults, fr: number): number | string =>
  r.peers.flatMap((p) => p.canaryFractions ?? []).find((c) => c.fraction === fr)?.everyMs ?? '?';

const fmt = (v: number | null | undefined, digits = 1): string =>
  v === null || v === undefined ? '–' : Number.isInteger(v) ? String(v) : v.toFixed(digits);

export function phaseOrder(p: PeerResult, phase: string): OrderResult | undefined {
  return p.order.find((o) => o.phase === phase);
}

/** The goals (for etcd-mirror; the bench only reports them). */
export function evaluateGoals(r: V3BenchResults, rttMs: number): Goal[] {
  const em = r.peers.find((p) => p.peer === 'etcd-mirror');
  if (!em) return [];
  const oneWay = rttMs / 2;
  const live = ['a-live', 'd-sustained'].map((ph) => phaseOrder(em, ph)).filter((o): o is OrderResult => o !== undefined);
  const inversions = live.length ? live.reduce((a, o) => a + o.inversions, 0) : null;
  const lost = live.length && live.every((o) => o.lost !== null) ? live.reduce((a, o) => a + o.lost!, 0) : null;
  const goal = (metric: string, text: string, value: number | string | null, met: boolean | null): Goal => ({ metric, goal: text, value, met: value === null ? null : met });
  const pct = em.sustained?.percentOfCeiling ?? null;
  const p99 = em.canary?.latencyMs.p99 ?? null;
  const backlog = em.backlog?.doneMs ?? null;
  const rss = em.rssMb.max;
  return [
    goal('sustained rate, % of the source ceiling', '≥ 90 %', pct, pct !== null && pct >= 90),
    goal('canary latency p99 (ms)', `≤ ${oneWay + 5} ms (one-way delay + 5 ms)`, p99, p99 !== null && p99 <= oneWay + 5),
    goal('missing canaries', '0', em.canary?.missing ?? null, em.canary?.missing === 0),
    goal('order inversions (live phases)', '0', inversions, inversions === 0),
    goal('lost events (live phases)', '0', lost, lost === 0),
    goal('backlog catch-up (ms)', '≤ 1000 ms', backlog, backlog !== null && backlog <= 1000),
    goal('RSS max (MB)', '≤ 200 MB', rss, rss !== null && rss <= 200),
    goal('compaction restart', 'resumes', em.compaction?.outcome ?? null, em.compaction?.resumed ?? null),
  ];
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

export function renderMarkdown(r: V3BenchResults): string {
  const rtt = r.options.rttMs as number;
  const peers = r.peers;
  const col = (name: PeerName) => peers.find((p) => p.peer === name);
  const names = peers.map((p) => p.peer);
  const goals = new Map(r.goals.map((g) => [g.metric, g]));
  const mark = (metric: string) => {
    const g = goals.get(metric);
    return g?.met === true ? ' ✓' : g?.met === false ? ' ✗' : '';
  };
  const rows: string[][] = [];
  const row = (metric: string, f: (p: PeerResult) => string, goal = '', goalKey?: string) =>
    rows.push([metric, ...names.map((n) => {
      const p = col(n)!;
      const text = p.error && f(p) === '–' ? 'error' : f(p);
      return text + (n === 'etcd-mirror' && goalKey ? mark(goalKey) : '');
    }), goal]);

  const c = r.ceiling;
  const cpuOf = (x: CeilingResult | null) =>
    x ? `; CPU: etcd ${fmt(x.cpuPercent.srcEtcd, 0)} %, load generator ${fmt(x.cpuPercent.bench, 0)} % of one core, machine ${fmt(x.cpuPercent.machineBusy, 0)} % busy` : '';
  const a = r.ceilingAfter;
  row(`source write ceiling (put/s): source alone, ${c?.seconds ?? '–'} s before the peers, ${c?.concurrency ?? '–'} in flight, ${c?.valueBytes ?? '–'} B values${cpuOf(c)}`, () => fmt(c?.putsPerSecond ?? null));
  row(`… measured again after the peers (${a?.seconds ?? '–'} s${cpuOf(a)}; not used for the %)`, () => fmt(a?.putsPerSecond ?? null));
  row('sustained: source put/s achieved, steady part (peer running)', (p) => fmt(p.sustained?.sourcePutsPerSecond));
  row('sustained: destination apply rate, steady part (events/s)', (p) => fmt(p.sustained?.destinationEventsPerSecond));
  row('sustained: … as % of the source ceiling', (p) => (p.sustained?.percentOfCeiling == null ? '–' : `${fmt(p.sustained.percentOfCeiling)} %`), '≥ 90 %', 'sustained rate, % of the source ceiling');
  row('sustained: … as % of the source rate in the same window', (p) => (p.sustained?.percentOfSource == null ? '–' : `${fmt(p.sustained.percentOfSource)} %`));
  row('sustained: checkpoint progress (source revisions/s)', (p) => (p.peer === 'make-mirror' ? 'n/a' : fmt(p.sustained?.checkpointRevisionsPerSecond)));
  row('sustained: caught up after the load stopped', (p) => {
    const s = p.sustained;
    if (!s) return '–';
    return s.caughtUpMs !== null ? `${fmt(s.caughtUpMs, 0)} ms` : `no: ${s.behindAtEnd} events behind after ${fmt(s.waitedSeconds, 0)} s`;
  });
  row('sustained: peer CPU (% of one core)', (p) => fmt(p.sustained?.cpuPercent.peer));
  row('sustained: peer CPU per applied event (µs), load start → caught up', (p) => fmt(p.sustained?.cpuMicrosPerEvent ?? null));
  row('canaries: background load achieved (put/s)', (p) => fmt(p.canary?.background.putsPerSecond));
  row('inside the mirror at the canary phase: received → write sent p50 / p99, of it the mirror\'s own (not waiting for the Txn before it) p50 / p99, destination write p50 / p99, event-loop delay p99 (ms; histogram bucket bounds)', (p) => {
    const i = p.canary?.inside;
    if (!i) return '–';
    const f = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `≤ ${x}`);
    return `${f(i.waitP50)} / ${f(i.waitP99)}, ${f(i.overheadP50)} / ${f(i.overheadP99)}, ${f(i.writeP50)} / ${f(i.writeP99)}, ${i.loopDelayP99 ?? '–'}`;
  }, 'own p99 ≤ 2 ms');
  row('canary latency p50 / p99 / max (ms)', (p) => {
    const l = p.canary?.latencyMs;
    return l ? `${fmt(l.p50)} / ${fmt(l.p99)} / ${fmt(l.max)}` : '–';
  }, `p99 ≤ ${rtt / 2 + 5} ms`, 'canary latency p99 (ms)');
  const fractions = [...new Set(r.peers.flatMap((p) => (p.canaryFractions ?? []).map((c) => c.fraction!)))];
  for (const fr of fractions) {
    row(`canaries every ${p0Every(r, fr)} ms at ${Math.round(fr * 100)} % of the source ceiling (background put/s achieved): p50 / p90 / p99 / max (ms), missing`, (p) => {
      const c = p.canaryFractions?.find((x) => x.fraction === fr);
      if (!c) return '–';
      const l = c.latencyMs;
      return `(${fmt(c.background.putsPerSecond)}) ${fmt(l.p50)} / ${fmt(l.p90 ?? null)} / ${fmt(l.p99)} / ${fmt(l.max)}, ${c.missing} of ${c.acked}`;
    });
  }
  row(`canaries missing (${r.options.drainSeconds} s after the end)`, (p) => (p.canary ? `${p.canary.missing} of ${p.canary.acked}` : '–'), '0', 'missing canaries');
  const orderCell = (ph: string) => (p: PeerResult) => {
    const o = phaseOrder(p, ph);
    return o ? `${o.inversions} of ${o.checked}` : '–';
  };
  const lostCell = (ph: string) => (p: PeerResult) => {
    const o = phaseOrder(p, ph);
    if (!o) return '–';
    return o.lost === null ? `n/a (${o.notAppliedYet} not applied yet)` : String(o.lost);
  };
  row('order inversions: canary phase (1,000 put/s)', orderCell('a-live'), '0', 'order inversions (live phases)');
  row('order inversions: sustained phase', orderCell('d-sustained'), '0', 'order inversions (live phases)');
  row('order inversions: backlog catch-up (make-mirror: full copy, key order)', orderCell('b-backlog'));
  row('order inversions: restart after the compaction (a resync or full copy writes in key order)', orderCell('c-compact'));
  row('lost events: canary phase', lostCell('a-live'), '0', 'lost events (live phases)');
  row('lost events: sustained phase', lostCell('d-sustained'), '0', 'lost events (live phases)');
  row('lost events: backlog', lostCell('b-backlog'));
  row(`backlog: ${fmt(peers[0]?.backlog?.events ?? null, 0)} events written while stopped, restart → destination has everything`, (p) => {
    const b = p.backlog;
    if (!b) return '–';
    if (b.doneMs === null) return `not within the wait${b.error ? ` (${b.error})` : ''}`;
    const up = b.fromUpMs !== null ? `, ${fmt(b.fromUpMs, 0)} ms from process up` : '';
    return `${fmt(b.doneMs, 0)} ms${up} (${b.destinationWrites} destination writes)`;
  }, '≤ 1 s', 'backlog catch-up (ms)');
  row('compaction while stopped, then restart', (p) => (p.compaction ? `${p.compaction.outcome}${p.compaction.doneMs !== null ? `, ${fmt(p.compaction.doneMs, 0)} ms` : ''}` : '–'), 'resumes', 'compaction restart');
  row('RSS max / at the end (MB)', (p) => `${fmt(p.rssMb.max)} / ${fmt(p.rssMb.end)}`, '≤ 200 MB', 'RSS max (MB)');
  row('destination equals source at the end', (p) => (p.finalDiff ? (p.finalDiff.equal ? `yes (${p.finalDiff.sourceKeys} keys)` : `no (${p.finalDiff.missing} missing, ${p.finalDiff.differing} differ, ${p.finalDiff.extra} extra)`) : 'not checked (not caught up)'));
  row('processes started', (p) => String(p.processes));

  let out = `\n## etcd v3 → v3 mirror bench: etcd-mirror vs etcdctl make-mirror\n\n`;
  out += `date ${r.date}, ${r.cores} cores (os.cpus().length), RTT ${rtt} ms between the peer and the source (delay proxy, ${rtt / 2} ms each way)` +
    `${r.options.quick ? ', QUICK (smoke run: numbers are only indicative)' : ''}\n\ncommand: \`${r.command}\`\n\n`;
  out += `| metric | ${names.join(' | ')} | goal (etcd-mirror) |\n|---|${names.map(() => '---').join('|')}|---|\n`;
  for (const cells of rows) out += `| ${cells.map(cell).join(' | ')} |\n`;
  for (const p of peers) if (p.error) out += `\n${p.peer} ERROR: ${p.error.split('\n')[0]}\n`;
  if (r.notes.length) out += `\n${r.notes.map((n) => `- ${n}`).join('\n')}\n`;
  return out;
}
