// `npm run bench`: replication delay and throughput of etcd-mirror against real etcd processes, with a WAN delay
// proxy between the mirror and the source. A benchmark, not a test: it measures and reports, it asserts nothing.
//
//   source etcd ──(delay proxy, RTT/2 each way)──> etcd-mirror ──> destination etcd
//        ↑ antagonist (open loop, stepped rates)                     ↓ canary stream watch
//        ↑ canary every 100 ms ─────────────── arrival time − ack time ┘
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { startEtcd, type EtcdProcess } from '../src/etcd/process.js';
import { CANARY_DIR, CanaryWatcher, writeCanaries, type CanaryRecord } from './lib/canary.js';
import { diffTrees, fill, put, readTree, storeIndex, writeSequentially, writeSequentiallyFor } from './lib/etcd-http.js';
import { histogramDelta, Mirror, type MetricsSnapshot, type MirrorState } from './lib/mirror.js';
import { evaluateTargets, printTable, renderSvg } from './lib/report.js';
import { busiestProcesses } from './lib/procstat.js';
import { cpuBetween, readCpu, Sampler } from './lib/sampler.js';
import { round, roundSummary, summarize } from './lib/stats.js';
import {
  BACKLOG_EVENTS,
  DEFAULT_MODES,
  HISTORY_WINDOW_EVENTS,
  MODE_ALIASES,
  MODE_FLAGS,
  MODES,
  type BenchResults,
  type CatchupResult,
  type DstCeiling,
  type Mode,
  type ModeResult,
  type ReloadModeResult,
  type ReloadResult,
  type StepResult,
  type StrictCeiling,
  type Verdict,
  type WriteBaseline,
} from './lib/types.js';
import { startAntagonist, startDelayProxy, type Antagonist, type DelayProxy } from './lib/workers.js';
import { describeSpec, sequentialV2, startDestination, type Destination, type DestinationSpec } from './lib/dst-cluster.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const HELP = `usage: npm run bench -- [options]

  --rtt-ms N            round trip added between the mirror and the source (default 30; the proxy delays
                        each direction by N/2)
  --rates LIST          antagonist put/s per step (default 10,100,1000,2000,3000,10000)
  --step-seconds N      length of each step (default 10)
  --modes LIST          any of: adaptive (default flags, i.e. --ordering adaptive; 'pipeline' is accepted
                        as an alias), strict (--ordering strict), key (--ordering key), sync (--pipeline off)
                        (default adaptive,strict,sync)
  --sync-max-rate N     sync mode runs only the steps up to this rate (default 1000; 0: all): its ceiling is
                        ~30 events/s, and every step above 1000/s only adds ~40 s of out-of-window recoveries
  --drain-seconds N     a canary not on the destination this long after the step's end is missing (default 10)
  --settle-seconds N    longest wait for the mirror to catch up after a step before it is restarted (default 30)
  --catchup-events N    backlog written while the mirror is stopped (default 900)
  --reload-keys N       keys in the reload run (default 100000)
  --baseline-keys N     keys written one at a time for the reload baseline (default: --reload-keys;
                        fewer are extrapolated)
  --baseline-seconds N  one-connection sequential write baseline against a fresh etcd, run before and after
                        the modes (default 10)
  --connections N       antagonist connections to the source (default 64)
  --max-outstanding N   antagonist requests unanswered at once; a write due beyond that is not sent (default 1000)
  --skip LIST           any of steps,catchup,reload,baseline
  --ceiling-fractions LIST
                        after a mode's --rates steps, its ceiling is the highest backlogged apply rate they
                        showed (so --rates should include one above it); then one step at each fraction of it,
                        e.g. 0.1,0.5,0.9, with a canary every 500 ms (rare writes; they count in the offered rate)
  --dst-commit-ms N     the destination is a three-member etcd whose raft peer links each pass through a delay
                        proxy (N/2 ms each way), so one write at a time commits in about N ms (the real figure
                        is measured and printed); during every step a one-connection sequential writer to it
                        (under /ceiling) gives strict order's ceiling under the same load
  --dst-disk            with --dst-commit-ms: the members' data in os.tmpdir() (on disk, fsync on) instead of
                        /dev/shm
  --mirror-args=ARGS    extra flags for every mirror started, space-separated, e.g.
                        --mirror-args="--write-concurrency 64" (the = is needed)
  --bin PATH            mirror entry to run (default dist-bench/bench/mirror-entry.js, built with the bench;
                        bin/etcd-mirror.js runs dist/, which needs npm run build)
  --out DIR             results directory (default bench/results)
  --auth password|cert  the auth bench instead (bench/auth.ts): no auth, a v2 password and a client
                        certificate side by side against auth-enabled etcds
  --quick               smoke run (~2 min): rates 10,100 for 3 s, drain 5 s, catch-up 200, reload 5000 keys,
                        baseline 3 s
  -h, --help            this help

Prints a table on stdout, progress on stderr; writes <out>/<ISO time>-rtt<N>.json and .svg.
`;

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
  rttMs: number;
  rates: number[];
  stepSeconds: number;
  modes: Mode[];
  syncMaxRate: number;
  drainSeconds: number;
  settleSeconds: number;
  catchupEvents: number;
  reloadKeys: number;
  baselineKeys: number;
  baselineSeconds: number;
  connections: number;
  maxOutstanding: number;
  skip: Set<string>;
  ceilingFractions: number[];
  mirrorArgs: string[];
  bin: string;
  out: string;
  quick: boolean;
  dst: DestinationSpec;
}

function parseOptions(argv: string[]): Options | null {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      'rtt-ms': { type: 'string' },
      rates: { type: 'string' },
      'step-seconds': { type: 'string' },
      modes: { type: 'string' },
      'sync-max-rate': { type: 'string' },
      'drain-seconds': { type: 'string' },
      'settle-seconds': { type: 'string' },
      'catchup-events': { type: 'string' },
      'reload-keys': { type: 'string' },
      'baseline-keys': { type: 'string' },
      'baseline-seconds': { type: 'string' },
      connections: { type: 'string' },
      'max-outstanding': { type: 'string' },
      skip: { type: 'string' },
      'mirror-args': { type: 'string' },
      bin: { type: 'string' },
      out: { type: 'string' },
      quick: { type: 'boolean' },
      'dst-commit-ms': { type: 'string' },
      'dst-disk': { type: 'boolean' },
      'ceiling-fractions': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(HELP);
    return null;
  }
  const quick = v.quick ?? false;
  const num = (raw: string | undefined, flag: string, dflt: number, min: number, max: number): number => {
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${flag}: expected a number from ${min} to ${max}`);
    return n;
  };
  const list = (raw: string) => raw.split(',').map((s) => s.trim()).filter(Boolean);
  const rates = v.rates ? list(v.rates).map((r) => num(r, '--rates', 0, 1, 100_000)) : quick ? [10, 100] : [10, 100, 1000, 2000, 3000, 10000];
  const modes: Mode[] = [];
  for (const raw of v.modes ? list(v.modes) : DEFAULT_MODES) {
    const m = MODE_ALIASES[raw] ?? raw;
    if (!(MODES as readonly string[]).includes(m)) {
      throw new Error(`--modes: unknown mode ${raw} (${MODES.join(', ')}; ${Object.entries(MODE_ALIASES).map(([a, b]) => `${a} = ${b}`).join(', ')})`);
    }
    if (!modes.includes(m as Mode)) modes.push(m as Mode);
  }
  const skip = new Set(v.skip ? list(v.skip) : []);
  const skippable = ['steps', 'catchup', 'reload', 'baseline'];
  for (const s of skip) if (!skippable.includes(s)) throw new Error(`--skip: unknown ${s} (${skippable.join(', ')})`);
  const reloadKeys = Math.round(num(v['reload-keys'], '--reload-keys', quick ? 5_000 : 100_000, 1, 1_000_000));
  return {
    rttMs: num(v['rtt-ms'], '--rtt-ms', 30, 0, 10_000),
    rates,
    stepSeconds: num(v['step-seconds'], '--step-seconds', quick ? 3 : 10, 1, 3_600),
    modes,
    syncMaxRate: num(v['sync-max-rate'], '--sync-max-rate', 1000, 0, 1_000_000),
    drainSeconds: num(v['drain-seconds'], '--drain-seconds', quick ? 5 : 10, 1, 600),
    settleSeconds: num(v['settle-seconds'], '--settle-seconds', quick ? 15 : 30, 1, 3_600),
    catchupEvents: Math.round(num(v['catchup-events'], '--catchup-events', quick ? 200 : 900, 1, 999)),
    reloadKeys,
    baselineKeys: Math.round(num(v['baseline-keys'], '--baseline-keys', reloadKeys, 1, reloadKeys)),
    baselineSeconds: num(v['baseline-seconds'], '--baseline-seconds', quick ? 3 : 10, 1, 600),
    connections: Math.round(num(v.connections, '--connections', 64, 1, 1_024)),
    maxOutstanding: Math.round(num(v['max-outstanding'], '--max-outstanding', 1_000, 1, 100_000)),
    skip,
    ceilingFractions: v['ceiling-fractions'] ? list(v['ceiling-fractions']).map((f) => num(f, '--ceiling-fractions', 0, 0.01, 1)) : [],
    mirrorArgs: (v['mirror-args'] ?? '').split(/\s+/).filter(Boolean),
    bin: path.resolve(ROOT, v.bin ?? 'dist-bench/bench/mirror-entry.js'),
    out: path.resolve(ROOT, v.out ?? 'bench/results'),
    quick,
    dst: {
      commitMs: v['dst-commit-ms'] === undefined ? null : num(v['dst-commit-ms'], '--dst-commit-ms', 0, 0, 1_000),
      disk: v['dst-disk'] ?? false,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Progress and cleanup

const t0 = performance.now();
function progress(msg: string): void {
  const s = Math.floor((performance.now() - t0) / 1000);
  process.stderr.write(`[bench ${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}\n`);
}

const cleanups: (() => Promise<unknown>)[] = [];
/** Registers an undo step; returns a function that runs it now (and unregisters it). */
function onCleanup(fn: () => Promise<unknown>): () => Promise<void> {
  cleanups.push(fn);
  return async () => {
    const i = cleanups.indexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
    await fn().catch((err: unknown) => progress(`cleanup failed: ${String(err)}`));
  };
}
async function cleanupAll(): Promise<void> {
  while (cleanups.length) {
    const fn = cleanups.pop()!;
    await fn().catch(() => {});
  }
}
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130); // second Ctrl-C: the exit hooks SIGKILL what is left
    interrupted = true;
    progress(`${sig}: cleaning up (mirror, proxy, etcd processes)…`);
    const hard = setTimeout(() => process.exit(130), 20_000);
    void cleanupAll().finally(() => {
      clearTimeout(hard);
      process.exit(130);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** events / seconds, when there is at least 1 s of it. */
function perSecondOver(p: { events: number; seconds: number }): number | null {
  return p.seconds >= 1 ? round(p.events / p.seconds, 1) : null;
}

function nullableRound(v: number | null, digits: number): number | null {
  return v === null ? null : round(v, digits);
}

function metricDelta(a: MetricsSnapshot | null, b: MetricsSnapshot | null, name: string): number | null {
  if (!a || !b) return null;
  return (b.sums.get(name) ?? 0) - (a.sums.get(name) ?? 0);
}

function labelledDelta(a: MetricsSnapshot | null, b: MetricsSnapshot | null, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  if (!b) return out;
  for (const [labels, value] of b.labelled.get(name) ?? []) {
    const d = value - (a?.labelled.get(name)?.get(labels) ?? 0);
    if (d !== 0) out[labels.replace(/^\{|\}$/g, '')] = d;
  }
  return out;
}

/** Newest mtime of the .ts files under the given dirs (for the build freshness note). */
function newestTs(dirs: string[]): number {
  let newest = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of dirs) if (existsSync(d)) walk(d);
  return newest;
}

// ---------------------------------------------------------------------------------------------------------------
// One mode: fresh etcd pair, proxy, mirror; the rate steps; then the catch-up run.

interface ModeCtx {
  mode: Mode;
  opts: Options;
  src: EtcdProcess;
  dst: Destination;
  proxy: DelayProxy;
  srcPool: Pool;
  watcher: CanaryWatcher;
  antagonist: Antagonist;
  mirror: Mirror;
  stopMirror: () => Promise<void>;
  restarts: number;
  nextSeq: number;
  logFile: string;
  problems: unknown[];
  problemCount: number;
}

function mirrorArgs(ctx: { mode: Mode; opts: Options; proxy: DelayProxy; dst: Destination }, reload: boolean): string[] {
  return [
    '--src-prefix', '/bench', '--dst-prefix', '/bench', '--strip',
    ...(reload ? ['--reload'] : []),
    ...MODE_FLAGS[ctx.mode],
    ...ctx.opts.mirrorArgs,
    ctx.proxy.url, ctx.dst.clientUrl,
  ];
}

async function spawnMirror(ctx: ModeCtx, reload: boolean): Promise<void> {
  const m = await Mirror.spawn(ctx.opts.bin, mirrorArgs(ctx, reload), ctx.logFile);
  ctx.mirror = m;
  ctx.stopMirror = onCleanup(async () => {
    await m.stop();
    collectProblems(ctx, m);
  });
}

function collectProblems(ctx: ModeCtx, m: Mirror): void {
  if ((m as unknown as { collected?: boolean }).collected) return;
  (m as unknown as { collected?: boolean }).collected = true;
  ctx.problemCount += m.problemCount;
  for (const p of m.problems) if (ctx.problems.length < 40) ctx.problems.push(p);
  if (m.exitCode !== null && m.exitCode !== 0 && ctx.problems.length < 40) {
    ctx.problems.push({ exitCode: m.exitCode, stderr: m.stderrText.slice(-1_000) });
  }
}

async function restartMirror(ctx: ModeCtx, why: string): Promise<void> {
  progress(`${ctx.mode}: restarting the mirror with --reload (${why})`);
  ctx.restarts++;
  await ctx.stopMirror();
  await spawnMirror(ctx, true);
  const s = await ctx.mirror.waitState((st) => st.state === 'tailing', 120_000);
  if (!s) throw new Error(`${ctx.mode}: mirror not tailing 120 s after a restart; stderr ${ctx.mirror.stderrText.slice(-500)}`);
}

/** Waits until the mirror has stored an index at or above the source's current index. */
async function caughtUp(ctx: ModeCtx, timeoutMs: number): Promise<boolean> {
  if (!ctx.mirror.alive) return false;
  const target = await storeIndex(ctx.src.clientUrl);
  const s = await ctx.mirror.waitState((st) => st.state === 'tailing' && (st.appliedIndex ?? -1) >= target, timeoutMs, 100);
  return s !== null;
}

/** Canaries every 500 ms in a fraction step: a rare write, next to a load that is the rest of the offered rate. */
const RARE_CANARY_MS = 500;

async function runStep(ctx: ModeCtx, rate: number, fraction?: number): Promise<StepResult> {
  const canaryEveryMs = fraction === undefined ? 100 : RARE_CANARY_MS;
  const { opts } = ctx;
  let restartedBefore: string | null = null;
  if (!ctx.mirror.alive) restartedBefore = `mirror had exited (code ${ctx.mirror.exitCode})`;
  else if (!(await caughtUp(ctx, opts.settleSeconds * 1000))) restartedBefore = `not caught up ${opts.settleSeconds} s after the previous step`;
  if (restartedBefore) await restartMirror(ctx, restartedBefore);

  const mirror = ctx.mirror;
  const pids = () => ({ mirror: mirror.alive ? mirror.pid : null, srcEtcd: ctx.src.pid, dstEtcd: ctx.dst.pid });
  // The mirror's counters, its /state and the destination's store index, read together (throughput over the step).
  const reading = async () => {
    const at = performance.now();
    const [metrics, state, dstIndex] = await Promise.all([
      mirror.alive ? mirror.metrics().catch(() => null) : null,
      mirror.alive ? mirror.state().catch(() => null) : null,
      storeIndex(ctx.dst.clientUrl).catch(() => null),
    ]);
    return { at, metrics, state, dstIndex };
  };
  const r0 = await reading();
  const m0 = r0.metrics;
  const sampler = new Sampler(() => ctx.mirror);
  const stepMs = opts.stepSeconds * 1000;
  const firstSeq = ctx.nextSeq;
  ctx.nextSeq += Math.ceil((opts.stepSeconds * 1000) / canaryEveryMs) + 1;

  sampler.start();
  const cpu0 = readCpu(pids());
  const clockStart = performance.now();
  const atEnd = sleep(stepMs).then(async () => {
    const cpu = readCpu(pids());
    return { cpu, r: await reading() };
  });
  const [ant, canaries, dstCeiling] = await Promise.all([
    ctx.antagonist.run({ rate, seconds: opts.stepSeconds, keyPrefix: '/bench/load', keys: 1000, tag: `r${rate}` }),
    writeCanaries(ctx.srcPool, firstSeq, opts.stepSeconds, canaryEveryMs),
    opts.dst.commitMs === null ? null : sequentialV2(ctx.dst.clientUrl, opts.stepSeconds, `${ctx.mode}-${rate}`).catch(() => null),
  ]);
  const { cpu: cpu1, r: rEnd } = await atEnd;
  const clockEnd = clockStart + stepMs;

  // Drain: every acknowledged canary seen (or the canary deadline passed), and the mirror caught up with
  // everything the source acknowledged (or the settle deadline passed, or the mirror died).
  const sourceIndexAtEnd = await storeIndex(ctx.src.clientUrl).catch(() => null);
  const canaryDeadline = clockEnd + opts.drainSeconds * 1000;
  const settleDeadline = clockEnd + Math.max(opts.drainSeconds, opts.settleSeconds) * 1000;
  const acked = canaries.filter((c) => c.ackAt !== null);
  let caughtUpAt: number | null = null;
  for (;;) {
    const now = performance.now();
    const allSeen = acked.every((c) => ctx.watcher.arrivals.has(c.seq));
    if (caughtUpAt === null && sourceIndexAtEnd !== null && mirror.alive) {
      const s = await mirror.state().catch(() => null);
      if (s && (s.appliedIndex ?? -1) >= sourceIndexAtEnd) caughtUpAt = performance.now();
    }
    const canariesDone = allSeen || now >= canaryDeadline;
    const mirrorDone = caughtUpAt !== null || now >= settleDeadline || !mirror.alive;
    if (canariesDone && mirrorDone) break;
    await sleep(50);
  }
  const summary = sampler.stop((clockEnd - clockStart) / 1000);
  // The mirror adds to etcdmirror_reordering_seconds_total every 500 ms: give it one more turn.
  if (mirror.alive) await sleep(600);
  const [m1, state1] = mirror.alive
    ? await Promise.all([mirror.metrics().catch(() => null), mirror.state().catch(() => null)])
    : [null, null];

  // Canaries: arrival − ack for those that arrived by the deadline; the others are checked on the destination.
  const delays: number[] = [];
  const fromSend: number[] = [];
  const unseen: CanaryRecord[] = [];
  for (const c of acked) {
    const at = ctx.watcher.arrivals.get(c.seq);
    if (at !== undefined && at <= canaryDeadline) {
      delays.push(at - c.ackAt!);
      fromSend.push(at - c.sentAt);
    } else if (at === undefined) unseen.push(c);
  }
  const lateSeen = acked.length - delays.length - unseen.length;
  let presentUnobserved = 0;
  if (unseen.length > 0) {
    const onDst = await readTree(ctx.dst.clientUrl, CANARY_DIR).catch(() => new Map<string, string>());
    presentUnobserved = unseen.filter((c) => onDst.has(`${CANARY_DIR}/${c.seq}`)).length;
  }
  const missing = unseen.length - presentUnobserved + lateSeen;

  let mismatchedKeys: number | null = null;
  if (caughtUpAt !== null) {
    const [a, b] = await Promise.all([readTree(ctx.src.clientUrl, '/bench/load'), readTree(ctx.dst.clientUrl, '/bench/load')]).catch(() => [null, null]);
    if (a && b) mismatchedKeys = diffTrees(a, b);
  }

  const oow = metricDelta(m0, m1, 'etcdmirror_out_of_window_total') ?? 0;
  const oowTransitions = labelledDelta(m0, m1, 'etcdmirror_state_transitions_total')['state="outOfWindow"'] ?? 0;
  const applied = metricDelta(m0, m1, 'etcdmirror_events_applied_total');
  const indexWrites = metricDelta(m0, m1, 'etcdmirror_index_writes_total');
  const died = !mirror.alive;
  if (died) collectProblems(ctx, mirror);
  const sawOow = summary.statesSeen.includes('outOfWindow') || summary.statesSeen.includes('recovering');
  const verdict: Verdict = died
    ? 'died'
    : oow > 0 || oowTransitions > 0 || sawOow
      ? 'out of window'
      : missing > 0
        ? 'missing canaries'
        : (summary.maxLagEvents ?? 0) >= HISTORY_WINDOW_EVENTS
          ? 'past window'
          : caughtUpAt === null
            ? 'did not catch up'
            : mismatchedKeys !== null && mismatchedKeys > 0
              ? 'destination differs'
              : 'ok';
  const cpu = cpuBetween(cpu0, cpu1);
  const delaySummary = roundSummary(summarize(delays));
  const gauge = (m: MetricsSnapshot | null) => {
    const v = m?.sums.get('etcdmirror_reordering_active');
    return v === undefined ? null : v > 0;
  };
  const stateSeconds = (st: MirrorState | null) => st?.ordering?.reorderingSeconds ?? null;
  const rs0 = stateSeconds(r0.state);
  const rs1 = stateSeconds(state1);
  const ordering: NonNullable<StepResult['ordering']> = {
    mode: state1?.ordering?.mode ?? r0.state?.ordering?.mode ?? null,
    reorderingSeconds: nullableRound(metricDelta(m0, m1, 'etcdmirror_reordering_seconds_total'), 3),
    reorderingSecondsState: rs0 !== null && rs1 !== null ? round(rs1 - rs0, 3) : null,
    reorderedWrites: metricDelta(m0, m1, 'etcdmirror_reordered_writes_total'),
    episodes: metricDelta(m0, m1, 'etcdmirror_reordering_episodes_total'),
    activeAtStart: gauge(m0),
    activeAtEnd: gauge(m1),
    activeSampleShare: summary.reorderingShare,
    active: null,
  };
  const anyKnown = [ordering.reorderingSecondsState, ordering.reorderingSeconds, ordering.episodes, ordering.activeSampleShare].some((v) => v !== null);
  ordering.active = anyKnown || ordering.activeAtStart !== null
    ? (ordering.reorderingSecondsState ?? 0) > 0 || (ordering.reorderingSeconds ?? 0) > 0 || (ordering.episodes ?? 0) > 0 ||
      (ordering.activeSampleShare ?? 0) > 0 || ordering.activeAtStart === true || ordering.activeAtEnd === true
    : null;
  const tSeconds = (rEnd.at - r0.at) / 1000;
  const appliedInStep = metricDelta(r0.metrics, rEnd.metrics, 'etcdmirror_events_applied_total');
  // The ceiling writer's own writes (+1: its warm-up write) are not the mirror's.
  const dstGrowth = r0.dstIndex !== null && rEnd.dstIndex !== null ? rEnd.dstIndex - r0.dstIndex - (dstCeiling ? dstCeiling.writes + dstCeiling.failed + 1 : 0) : null;
  const throughput: NonNullable<StepResult['throughput']> = {
    seconds: round(tSeconds, 3),
    eventsApplied: appliedInStep,
    eventsAppliedPerSecond: appliedInStep === null ? null : round(appliedInStep / tSeconds, 1),
    dstIndexGrowth: dstGrowth,
    dstWritesPerSecond: dstGrowth === null ? null : round(dstGrowth / tSeconds, 1),
    backloggedEventsPerSecond: perSecondOver(summary.backlogged.before),
    backloggedSeconds: summary.backlogged.before.seconds,
    drainBacklogEvents: null,
    drainReplayMs: null,
    drainReplayEventsPerSecond: null,
  };
  const appliedAtEnd = rEnd.state?.appliedIndex ?? null;
  if (sourceIndexAtEnd !== null && appliedAtEnd !== null) {
    const backlog = sourceIndexAtEnd - appliedAtEnd;
    throughput.drainBacklogEvents = backlog;
    const stepS = (clockEnd - clockStart) / 1000;
    // No state transition between the step's end and the drain's end either (a recovery shorter than the 0.5 s
    // sampling would move appliedIndex to a snapshot's index, not by replaying).
    const transitions = (m: MetricsSnapshot | null) => m?.sums.get('etcdmirror_state_transitions_total') ?? null;
    const t0 = transitions(rEnd.metrics);
    const t1 = transitions(m1);
    const tailingThroughout = rEnd.state?.state === 'tailing' && summary.samples.every((x) => x[0] < stepS || x[1] === 'tailing') &&
      t0 !== null && t1 !== null && t0 === t1;
    if (caughtUpAt !== null && tailingThroughout) {
      const ms = Math.max(0, caughtUpAt - rEnd.at);
      throughput.drainReplayMs = round(ms, 0);
      if (backlog >= BACKLOG_EVENTS && ms >= 200) throughput.drainReplayEventsPerSecond = round(backlog / (ms / 1000), 1);
    }
  }
  const result: StepResult = {
    mode: ctx.mode,
    rate,
    ...(fraction === undefined ? {} : { fraction, canaryEveryMs }),
    seconds: opts.stepSeconds,
    verdict,
    restartedBefore,
    dstCeiling,
    antagonist: {
      scheduled: ant.scheduled,
      sent: ant.sent,
      acked: ant.acked,
      notSent: ant.notSent,
      errors: ant.errors,
      errorSamples: ant.errorSamples,
      achievedRate: round(ant.acked / opts.stepSeconds, 1),
      ackLatencyMs: roundSummary(summarize(ant.latencies)),
      windDownMs: round(ant.windDownMs, 1),
      maxTickGapMs: round(ant.maxTickGapMs, 1),
    },
    canary: {
      written: canaries.length,
      writeErrors: canaries.length - acked.length,
      seen: delays.length,
      missing,
      presentUnobserved,
      delayMs: delaySummary,
      delayFromSendMs: roundSummary(summarize(fromSend)),
    },
    mirror: {
      outOfWindow: oowTransitions,
      errors401: oow,
      faults: labelledDelta(m0, m1, 'etcdmirror_faults_total'),
      died,
      exitCode: mirror.exitCode,
      statesSeen: summary.statesSeen,
      maxLagEvents: summary.maxLagEvents,
      maxQueue: summary.maxQueue,
      maxInFlight: summary.maxInFlight,
      cpuPercent: cpu.mirror ?? null,
      maxRssMb: summary.maxRssMb,
      eventsApplied: applied,
      indexWrites,
      dstWritesPerEvent: applied && indexWrites !== null ? round((applied + indexWrites) / applied, 3) : null,
      dstWriteLatencyMs: histogramDelta(m0, m1, 'etcdmirror_write_latency'),
      eventWaitMs: histogramDelta(m0, m1, 'etcdmirror_event_wait_seconds'),
      eventOverheadMs: histogramDelta(m0, m1, 'etcdmirror_event_overhead_seconds'),
      eventLoopDelayP99Ms: ((d) => (d === undefined ? null : round(d * 1000, 2)))(m1?.sums.get('etcdmirror_process_nodejs_eventloop_lag_p99_seconds')),
    },
    ordering,
    throughput,
    cpuPercent: {
      mirror: cpu.mirror ?? null,
      srcEtcd: cpu.srcEtcd ?? null,
      dstEtcd: cpu.dstEtcd ?? null,
      bench: cpu.bench ?? null,
      machineBusy: cpu.machineBusy ?? null,
      other:
        cpu.machineBusy != null && cpu.mirror != null && cpu.srcEtcd != null && cpu.dstEtcd != null && cpu.bench != null
          ? round(Math.max(0, cpu.machineBusy - (cpu.mirror + cpu.srcEtcd + cpu.dstEtcd + cpu.bench) / os.availableParallelism()), 1)
          : null,
    },
    drain: {
      sourceIndexAtEnd,
      caughtUpMs: caughtUpAt === null ? null : round(Math.max(0, caughtUpAt - clockEnd), 0),
      mismatchedKeys,
    },
    samples: summary.samples,
  };
  progress(
    `${ctx.mode} ${rate}/s: achieved ${result.antagonist.achievedRate}/s (not sent ${ant.notSent}, errors ${ant.errors}), ` +
      `canary p50 ${delaySummary.p50 ?? '-'} p99 ${delaySummary.p99 ?? '-'} max ${delaySummary.max ?? '-'} ms, missing ${missing}` +
      `${presentUnobserved ? ` (+${presentUnobserved} unobserved)` : ''}, OOW ${oowTransitions} (401: ${oow}), lag max ${summary.maxLagEvents ?? '-'}, ` +
      `caught up ${result.drain.caughtUpMs === null ? 'never' : `${result.drain.caughtUpMs} ms`}, mirror CPU ${cpu.mirror ?? '-'}% RSS ${summary.maxRssMb ?? '-'} MB, ` +
      `machine ${cpu.machineBusy}% busy (other work ${result.cpuPercent.other ?? '-'}%); applied ${throughput.eventsAppliedPerSecond ?? '-'} ev/s, dst ${throughput.dstWritesPerSecond ?? '-'} writes/s, ` +
      `backlogged ${throughput.backloggedEventsPerSecond ?? '-'} ev/s over ${throughput.backloggedSeconds} s (drain: ${throughput.drainBacklogEvents ?? '-'} events in ` +
      `${throughput.drainReplayMs ?? '-'} ms = ${throughput.drainReplayEventsPerSecond ?? '-'} ev/s); reordering ${ordering.reorderingSeconds ?? '-'} s ` +
      `(/state ${ordering.reorderingSecondsState ?? '-'} s), ${ordering.reorderedWrites ?? '-'} reordered writes, ${ordering.episodes ?? '-'} episodes → ${verdict}` +
      (dstCeiling ? `; beside it one write at a time to the destination: ${dstCeiling.writesPerSecond} writes/s (p50 ${dstCeiling.p50Ms} ms)` : ''),
  );
  return result;
}

async function runCatchup(ctx: ModeCtx): Promise<CatchupResult> {
  const { opts } = ctx;
  const n = opts.catchupEvents;
  const base: CatchupResult = {
    mode: ctx.mode, events: n, writeSeconds: 0, sourceIndex: 0, stopExitCode: null,
    totalMs: null, fromTailingMs: null, eventsPerSecond: null, maxRssMb: null, finalState: null, statesSeen: [],
    outOfWindow: 0, faults: {}, dstIndexGrowth: null, reorderingSeconds: null, reorderedWrites: null, error: null,
  };
  if (!ctx.mirror.alive || !(await caughtUp(ctx, opts.settleSeconds * 1000))) await restartMirror(ctx, 'not caught up before the catch-up run');
  progress(`${ctx.mode}: catch-up run: stopping the mirror, writing ${n} events`);
  const old = ctx.mirror;
  await ctx.stopMirror();
  base.stopExitCode = old.exitCode;
  const w = await fill(ctx.src.clientUrl, n, (i) => `/bench/load/k${i % 1000}`, (i) => `catchup-${i}`, { concurrency: 16 });
  base.writeSeconds = round(w.seconds, 3);
  base.sourceIndex = await storeIndex(ctx.src.clientUrl);
  const dstIndex0 = await storeIndex(ctx.dst.clientUrl).catch(() => null);
  const spawnedAt = Date.now();
  await spawnMirror(ctx, false);
  const m = ctx.mirror;
  const sampler = new Sampler(() => m, 200);
  sampler.start();
  const timeoutMs = Math.max(60_000, (n / 10) * 1000);
  const deadline = Date.now() + timeoutMs;
  const states = new Set<string>();
  let doneAt: number | null = null;
  while (Date.now() < deadline && m.alive) {
    const s = await m.state().catch(() => null);
    if (s) {
      states.add(s.state);
      if (s.state === 'tailing' && (s.appliedIndex ?? -1) >= base.sourceIndex) {
        doneAt = Date.now();
        break;
      }
    }
    await sleep(10);
  }
  const dstIndex1 = doneAt !== null ? await storeIndex(ctx.dst.clientUrl).catch(() => null) : null;
  const doneState = doneAt !== null ? await m.state().catch(() => null) : null;
  base.dstIndexGrowth = dstIndex0 !== null && dstIndex1 !== null ? dstIndex1 - dstIndex0 : null;
  base.reorderingSeconds = doneState?.ordering?.reorderingSeconds ?? null;
  // Keep watching for a second: a resynchronisation decided just after catching up still belongs to this run.
  if (doneAt !== null) await sleep(1_000);
  const summary = sampler.stop();
  for (const st of summary.statesSeen) states.add(st);
  const metrics = m.alive ? await m.metrics().catch(() => null) : null;
  base.maxRssMb = summary.maxRssMb;
  base.statesSeen = [...states];
  base.outOfWindow = metrics?.labelled.get('etcdmirror_state_transitions_total')?.get('{state="outOfWindow"}') ?? 0;
  base.faults = labelledDelta(null, metrics, 'etcdmirror_faults_total');
  base.reorderedWrites = metrics?.sums.get('etcdmirror_reordered_writes_total') ?? null;
  base.finalState = (await m.state().catch(() => null))?.state ?? null;
  if (doneAt === null) {
    base.error = m.alive ? `not tailing at appliedIndex >= ${base.sourceIndex} within ${timeoutMs / 1000} s` : `mirror exited (${m.exitCode})`;
  } else {
    base.totalMs = doneAt - spawnedAt;
    const tailing = m.logs.find((l) => l.msg === 'tailing the source');
    if (tailing?.time) {
      base.fromTailingMs = doneAt - tailing.time;
      base.eventsPerSecond = round(n / (Math.max(1, base.fromTailingMs) / 1000), 1);
    }
  }
  if (base.outOfWindow > 0 && !base.error) {
    base.error = `went out of window ${base.outOfWindow}x during the catch-up or within 1 s after it (faults ${JSON.stringify(base.faults)})`;
  }
  progress(
    `${ctx.mode}: catch-up of ${n} events: ${base.fromTailingMs ?? '-'} ms after 'tailing' (${base.eventsPerSecond ?? '-'} events/s), ` +
      `${base.totalMs ?? '-'} ms after spawn, ${base.dstIndexGrowth ?? '-'} destination writes, reordering ${base.reorderingSeconds ?? '-'} s ` +
      `(${base.reorderedWrites ?? '-'} reordered writes)${base.error ? `; ${base.error}` : ''}`,
  );
  return base;
}

async function runMode(mode: Mode, opts: Options, logDir: string): Promise<ModeResult> {
  const result: ModeResult = {
    mode, mirrorArgs: [], steps: [], catchup: null, mirrorLog: '', mirrorProblemCount: 0, mirrorProblems: [],
    mirrorRestarts: 0, watcherRestarts: 0, error: null,
  };
  progress(`${mode}: starting a fresh source and destination etcd`);
  const [src, dst] = await Promise.all([startEtcd({ name: `${mode}-src` }), startDestination(`${mode}-dst`, opts.dst)]);
  const stopEtcds = onCleanup(() => Promise.all([src.stop(), dst.stop()]));
  const srcUrl = new URL(src.clientUrl);
  const proxy = await startDelayProxy({ host: srcUrl.hostname, port: Number(srcUrl.port) }, opts.rttMs / 2);
  const closeProxy = onCleanup(() => proxy.close());
  const srcPool = new Pool(src.clientUrl, { connections: 4 });
  const closePool = onCleanup(() => srcPool.close());
  const watcher = new CanaryWatcher(dst.clientUrl);
  const stopWatcher = onCleanup(() => watcher.stop());
  const antagonist = startAntagonist({ url: src.clientUrl, connections: opts.connections, maxOutstanding: opts.maxOutstanding });
  const closeAntagonist = onCleanup(() => antagonist.close());
  const ctx: ModeCtx = {
    mode, opts, src, dst, proxy, srcPool, watcher, antagonist,
    mirror: undefined as unknown as Mirror,
    stopMirror: async () => {},
    restarts: 0,
    nextSeq: 1,
    logFile: path.join(logDir, `mirror-${mode}.log`),
    problems: [],
    problemCount: 0,
  };
  result.mirrorLog = ctx.logFile;
  try {
    // Something to reload, so the first reconcile is not of an empty prefix.
    await put(srcPool, '/bench/load/k0', 'initial');
    await watcher.start();
    await spawnMirror(ctx, true);
    result.mirrorArgs = ctx.mirror.args;
    const s = await ctx.mirror.waitState((st) => st.state === 'tailing', 120_000);
    if (!s) throw new Error(`mirror not tailing 120 s after start; stderr ${ctx.mirror.stderrText.slice(-500)}`);
    progress(`${mode}: mirror tailing (pid ${ctx.mirror.pid}), proxy ${proxy.url} → ${src.clientUrl} (+${opts.rttMs / 2} ms each way)`);
    if (!opts.skip.has('steps')) {
      const capped = mode === 'sync' && opts.syncMaxRate > 0;
      result.skippedRates = capped ? opts.rates.filter((r) => r > opts.syncMaxRate) : [];
      if (result.skippedRates.length) progress(`${mode}: skipping the steps above --sync-max-rate ${opts.syncMaxRate}: ${result.skippedRates.join(',')}`);
      const step = async (rate: number, fraction?: number) => {
        const what = fraction === undefined ? '' : ` (${Math.round(fraction * 100)} % of the ceiling, with the canaries)`;
        progress(`${mode}: step ${rate} put/s${what} for ${opts.stepSeconds} s`);
        const s = await runStep(ctx, rate, fraction);
        result.steps.push(s);
        const { eventWaitMs: w, eventOverheadMs: o, dstWriteLatencyMs: d, eventLoopDelayP99Ms: loop } = s.mirror;
        progress(
          `${mode}: inside the mirror at ${rate} put/s: received → write sent p50 ≤ ${w?.p50AtMostMs ?? '–'} p99 ≤ ${w?.p99AtMostMs ?? '–'} ms ` +
            `(the mirror's own p50 ≤ ${o?.p50AtMostMs ?? '–'} p99 ≤ ${o?.p99AtMostMs ?? '–'} ms); ` +
            `destination write p50 ≤ ${d?.p50AtMostMs ?? '–'} p99 ≤ ${d?.p99AtMostMs ?? '–'} ms; event-loop delay p99 ${loop ?? '–'} ms`,
        );
      };
      for (const rate of opts.rates) {
        if (capped && rate > opts.syncMaxRate) continue;
        await step(rate);
      }
      if (opts.ceilingFractions.length) {
        result.ceiling = modeCeiling(result.steps);
        if (!result.ceiling) progress(`${mode}: no step backlogged the mirror, so its ceiling is not known: no fraction steps`);
        else {
          const { eventsPerSecond: c, fromRate } = result.ceiling;
          progress(`${mode}: ceiling ${round(c, 1)} events/s (backlogged at ${fromRate} put/s)`);
          // The canaries are part of the offered rate: the load is the rest.
          for (const f of opts.ceilingFractions) await step(Math.max(1, Math.round(f * c - 1000 / RARE_CANARY_MS)), f);
        }
      }
    }
    if (!opts.skip.has('catchup')) result.catchup = await runCatchup(ctx);
  } catch (err) {
    result.error = String((err as Error)?.stack ?? err);
    progress(`${mode}: FAILED: ${String((err as Error)?.message ?? err)}`);
  } finally {
    await ctx.stopMirror();
    await closeAntagonist();
    await stopWatcher();
    await closePool();
    await closeProxy();
    await stopEtcds();
  }
  result.mirrorRestarts = ctx.restarts;
  result.watcherRestarts = watcher.restarts;
  result.mirrorProblemCount = ctx.problemCount;
  result.mirrorProblems = ctx.problems;
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// One-connection sequential write baseline: a fresh etcd started like the destination etcds (startEtcd, the same
// options), PUTs of /bench/load/k<i % 1000> one at a time on one keep-alive connection, for N seconds.

async function runWriteBaseline(opts: Options, when: string): Promise<WriteBaseline> {
  progress(`baseline (${when}): ${opts.baselineSeconds} s of one-at-a-time PUTs on one keep-alive connection to a fresh etcd`);
  const dst = await startDestination(`write-baseline-${when}`, opts.dst);
  const stopDst = onCleanup(() => dst.stop());
  try {
    const at = new Date().toISOString();
    const cpu0 = readCpu({ etcd: dst.pid });
    const w = await writeSequentiallyFor(dst.clientUrl, opts.baselineSeconds, (i) => `/bench/load/k${i % 1000}`, (i) => `baseline-${i}`);
    const cpu = cpuBetween(cpu0, readCpu({ etcd: dst.pid }));
    const out: WriteBaseline = {
      when,
      at,
      seconds: round(w.seconds, 3),
      writes: w.writes,
      failed: w.failed,
      writesPerSecond: round(w.writes / w.seconds, 1),
      latencyMs: roundSummary(summarize(w.latencies), 3),
      cpuPercent: {
        etcd: cpu.etcd ?? null,
        bench: cpu.bench ?? null,
        machineBusy: cpu.machineBusy ?? null,
        other: cpu.machineBusy != null && cpu.etcd != null && cpu.bench != null
          ? round(Math.max(0, cpu.machineBusy - (cpu.etcd + cpu.bench) / os.availableParallelism()), 1)
          : null,
      },
    };
    progress(`baseline (${when}): ${out.writes} writes in ${out.seconds} s = ${out.writesPerSecond} writes/s (p50 ${out.latencyMs.p50} ms, p99 ${out.latencyMs.p99} ms, ${out.failed} failed; etcd CPU ${cpu.etcd ?? '-'}%, machine ${cpu.machineBusy ?? '-'}% busy, other work ${out.cpuPercent?.other ?? '-'}%)`);
    return out;
  } finally {
    await stopDst();
  }
}

/**
 * Strict mode's destination write rate against the baseline: its best backlogged replay rate in any step (the
 * steps it could not keep up with), and its catch-up rate.
 */
function strictCeiling(modes: ModeResult[], baselines: WriteBaseline[]): StrictCeiling | null {
  const strict = modes.find((m) => m.mode === 'strict');
  if (!strict) return null;
  const base = baselines.length ? Math.max(...baselines.map((b) => b.writesPerSecond)) : null;
  const ratio = (v: number) => (base ? round(v / base, 3) : null);
  let step: StrictCeiling['step'] = null;
  let drain: StrictCeiling['drain'] = null;
  for (const s of strict.steps) {
    const t = s.throughput;
    if (!t) continue;
    const v = t.backloggedEventsPerSecond;
    if (v !== null && (!step || v > step.eventsPerSecond)) {
      step = { rate: s.rate, eventsPerSecond: v, backloggedSeconds: t.backloggedSeconds, dstWritesPerSecond: t.dstWritesPerSecond, ratio: ratio(v) };
    }
    const d = t.drainReplayEventsPerSecond ?? null;
    if (d !== null && (!drain || d > drain.eventsPerSecond)) {
      drain = { rate: s.rate, eventsPerSecond: d, backlogEvents: t.drainBacklogEvents ?? 0, replayMs: t.drainReplayMs ?? 0, ratio: ratio(d) };
    }
  }
  const c = strict.catchup;
  const catchup = c && c.eventsPerSecond !== null && !c.error ? { events: c.events, eventsPerSecond: c.eventsPerSecond, ratio: ratio(c.eventsPerSecond) } : null;
  return { baselineWritesPerSecond: base, drain, step, catchup };
}

function quietOf(b: WriteBaseline | undefined): DstCeiling | null {
  return b ? { writes: b.writes, failed: b.failed, seconds: b.seconds, writesPerSecond: b.writesPerSecond, p50Ms: b.latencyMs.p50, p99Ms: b.latencyMs.p99 } : null;
}

/**
 * A step kept up in real time: verdict ok, never 1 s with a backlog of BACKLOG_EVENTS, and 90 % of the canaries
 * on the destination within 250 ms (a 5 s step's applied count is too coarse to judge by).
 */
/** The highest backlogged apply rate of the plain steps (a backlog waited ≥ 1 s, so the mirror ran flat out). */
function modeCeiling(steps: StepResult[]): { eventsPerSecond: number; fromRate: number } | null {
  let best: { eventsPerSecond: number; fromRate: number } | null = null;
  for (const s of steps) {
    const t = s.throughput;
    if (s.fraction !== undefined || !t || t.backloggedEventsPerSecond === null || t.backloggedSeconds < 1) continue;
    if (!best || t.backloggedEventsPerSecond > best.eventsPerSecond) best = { eventsPerSecond: t.backloggedEventsPerSecond, fromRate: s.rate };
  }
  return best;
}

function keptUp(s: StepResult): boolean {
  return s.verdict === 'ok' && (s.throughput?.backloggedSeconds ?? 0) < 1 && (s.canary.delayMs.p90 ?? Infinity) <= 250;
}

/**
 * With --dst-commit-ms: one row per step (applied rate, strict's ceiling under the same load and the ratio, canary
 * delay), then per mode the highest rate kept up in real time, the lowest that lagged, and whether it lost the window.
 */
function latencyTable(modes: ModeResult[], quiet: WriteBaseline | undefined, opts: Options): string {
  const f = (v: number | null | undefined, d = 1) => (v === null || v === undefined ? '–' : String(round(v, d)));
  const lines = [
    `destination: ${describeSpec(opts.dst)}; quiet one write at a time: ${f(quiet?.writesPerSecond)} writes/s, ` +
      `p50 ${f(quiet?.latencyMs.p50, 2)} ms, p99 ${f(quiet?.latencyMs.p99, 2)} ms`,
    '',
    '| mode | put/s | applied ev/s | backlogged ev/s | 1-at-a-time beside it (w/s, p50 ms) | applied ÷ that | canary p50 / p90 / p99 ms | lag max | verdict |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const m of modes) {
    for (const s of m.steps) {
      const c = s.dstCeiling;
      const t = s.throughput;
      const best = t?.backloggedEventsPerSecond ?? t?.eventsAppliedPerSecond ?? null;
      const d = s.canary.delayMs;
      lines.push(
        `| ${m.mode} | ${s.rate} | ${f(t?.eventsAppliedPerSecond)} | ${f(t?.backloggedEventsPerSecond)} | ${c ? `${f(c.writesPerSecond)}, ${f(c.p50Ms, 2)}` : '–'} | ` +
          `${c && best !== null && c.writesPerSecond > 0 ? f(best / c.writesPerSecond, 2) : '–'} | ${f(d.p50)} / ${f(d.p90)} / ${f(d.p99)} | ${f(s.mirror.maxLagEvents, 0)} | ${s.verdict} |`,
      );
    }
  }
  lines.push('', '| mode | kept up in real time up to put/s | lagged from put/s | lost the window |', '|---|---|---|---|');
  for (const m of modes) {
    const up = m.steps.filter(keptUp).map((s) => s.rate);
    const lag = m.steps.filter((s) => !keptUp(s)).map((s) => s.rate);
    const lost = m.steps
      .filter((s) => s.verdict === 'out of window' || s.verdict === 'died' || (s.mirror.maxLagEvents ?? 0) >= HISTORY_WINDOW_EVENTS)
      .map((s) => `${s.rate} (${s.verdict === 'out of window' || s.verdict === 'died' ? s.verdict : `lag ${s.mirror.maxLagEvents}`})`);
    lines.push(`| ${m.mode} | ${up.length ? Math.max(...up) : '–'} | ${lag.length ? Math.min(...lag) : '–'} | ${lost.length ? lost.join(', ') : 'no'} |`);
  }
  const fractions = opts.ceilingFractions;
  if (fractions.length) {
    const pct = (f: number) => `${Math.round(f * 100)} %`;
    lines.push(
      '',
      `A rare write's delay (canary every ${RARE_CANARY_MS} ms, arrival − source ack) at a fraction of each mode's ceiling (offered = put/s + canaries/s):`,
      '',
      `| mode | ceiling ev/s (backlogged at put/s) | ${fractions.map((f) => `${pct(f)}: offered/s, canary p50 / p90 / p99 ms, verdict`).join(' | ')} |`,
      `|---|---|${fractions.map(() => '---|').join('')}`,
    );
    for (const m of modes) {
      const cells = fractions.map((fr) => {
        const s = m.steps.find((x) => x.fraction === fr);
        if (!s) return '–';
        const d = s.canary.delayMs;
        return `${round(s.rate + 1000 / (s.canaryEveryMs ?? 100), 0)}, ${f(d.p50)} / ${f(d.p90)} / ${f(d.p99)}, ${s.verdict}`;
      });
      lines.push(`| ${m.mode} | ${m.ceiling ? `${f(m.ceiling.eventsPerSecond)} (${m.ceiling.fromRate})` : '–'} | ${cells.join(' | ')} |`);
    }
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------------------
// Reload run: N keys in the source, --reload into an empty destination, against writing them one at a time.

const reloadKey = (i: number) => `/bench/reload/k${i}`;
const reloadValue = (i: number) => `value-${i}-0123456789abcdef`;

async function runReload(opts: Options, logDir: string): Promise<ReloadResult> {
  const n = opts.reloadKeys;
  progress(`reload: starting a source etcd and filling it with ${n} keys`);
  const src = await startEtcd({ name: 'reload-src' });
  const stopSrc = onCleanup(() => src.stop());
  const srcUrl = new URL(src.clientUrl);
  const proxy = await startDelayProxy({ host: srcUrl.hostname, port: Number(srcUrl.port) }, opts.rttMs / 2);
  const closeProxy = onCleanup(() => proxy.close());
  const concurrency = 64;
  try {
    const f = await fill(src.clientUrl, n, reloadKey, reloadValue, { concurrency, onProgress: (d) => progress(`reload: filled ${d}/${n}`) });
    const result: ReloadResult = {
      keys: n,
      fill: { seconds: round(f.seconds, 2), keysPerSecond: round(n / f.seconds, 0), failed: f.failed, concurrency },
      modes: [],
      baseline: null,
      speedup: {},
    };
    progress(`reload: source filled in ${f.seconds.toFixed(1)} s (${concurrency} concurrent writers, ${f.failed} failed)`);
    for (const mode of opts.modes) result.modes.push(await reloadOnce(mode, n, proxy, opts, logDir));

    const b = opts.baselineKeys;
    progress(`reload: baseline: writing ${b} keys one at a time on one keep-alive connection to a fresh destination etcd`);
    const dst = await startEtcd({ name: 'baseline-dst' });
    const stopDst = onCleanup(() => dst.stop());
    try {
      const w = await writeSequentially(dst.clientUrl, b, reloadKey, reloadValue, (d) => progress(`reload: baseline ${d}/${b}`));
      const perSecond = b / w.seconds;
      result.baseline = {
        keysWritten: b,
        seconds: round(w.seconds, 2),
        keysPerSecond: round(perSecond, 0),
        failed: w.failed,
        secondsForAllKeys: round(n / perSecond, 1),
        extrapolated: b < n,
      };
      progress(`reload: baseline ${round(perSecond, 0)} keys/s (${w.seconds.toFixed(1)} s for ${b} keys)`);
    } finally {
      await stopDst();
    }
    for (const m of result.modes) {
      result.speedup[m.mode] = m.keysPerSecond !== null && result.baseline ? round(m.keysPerSecond / result.baseline.keysPerSecond, 1) : null;
    }
    return result;
  } finally {
    await closeProxy();
    await stopSrc();
  }
}

async function reloadOnce(mode: Mode, n: number, proxy: DelayProxy, opts: Options, logDir: string): Promise<ReloadModeResult> {
  const out: ReloadModeResult = {
    mode, keys: n, seconds: null, keysPerSecond: null, written: null, wallMs: null, destinationKeys: null,
    maxRssMb: null, cpuPercent: null, error: null,
  };
  progress(`reload (${mode}): --reload of ${n} keys into an empty destination`);
  const dst = await startEtcd({ name: `reload-dst-${mode}` });
  const stopDst = onCleanup(() => dst.stop());
  const spawnedAt = Date.now();
  const mirror = await Mirror.spawn(
    opts.bin,
    ['--src-prefix', '/bench', '--dst-prefix', '/bench', '--strip', '--reload', ...MODE_FLAGS[mode], ...opts.mirrorArgs, proxy.url, dst.clientUrl],
    path.join(logDir, `mirror-reload-${mode}.log`),
  );
  const stopMirror = onCleanup(() => mirror.stop());
  const sampler = new Sampler(() => mirror, 250);
  sampler.start();
  const cpu0 = readCpu({ mirror: mirror.pid });
  try {
    const line = await mirror.waitLog((l) => l.msg === 'destination reconciled to the source snapshot', 15 * 60_000);
    const cpu1 = readCpu({ mirror: mirror.pid });
    const tailing = await mirror.waitState((s) => s.state === 'tailing', 60_000);
    out.wallMs = tailing ? Date.now() - spawnedAt : null;
    out.cpuPercent = cpuBetween(cpu0, cpu1).mirror ?? null;
    if (!line) {
      out.error = mirror.alive ? 'no reconcile line within 15 min' : `mirror exited (${mirror.exitCode}): ${mirror.stderrText.slice(-300)}`;
    } else {
      out.seconds = typeof line.seconds === 'number' ? round(line.seconds, 3) : null;
      out.written = typeof line.written === 'number' ? line.written : null;
      out.keysPerSecond = out.seconds ? round(n / out.seconds, 0) : null;
    }
    const tree = await readTree(dst.clientUrl, '/bench/reload').catch(() => null);
    out.destinationKeys = tree ? tree.size : null;
  } finally {
    out.maxRssMb = sampler.stop().maxRssMb;
    await stopMirror();
    await stopDst();
  }
  progress(
    `reload (${mode}): ${out.error ?? `${out.seconds} s in the log (${out.keysPerSecond} keys/s), ${out.wallMs} ms spawn→tailing, ` +
      `${out.destinationKeys} keys on the destination, RSS max ${out.maxRssMb} MB`}`,
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv.some((a) => a === '--auth' || a.startsWith('--auth='))) {
    const { runAuthBench } = await import('./auth.js');
    return runAuthBench(argv);
  }
  if (argv.some((a, i) => a === '--src-api=v3' || (a === '--src-api' && argv[i + 1] === 'v3'))) {
    const { runV3Bench } = await import('./v3.js');
    return runV3Bench(argv);
  }
  let opts: Options | null;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (!opts) return 0;
  if (!existsSync(opts.bin)) {
    process.stderr.write(`bench: mirror entry ${opts.bin} not found (npm run build for bin/etcd-mirror.js)\n`);
    return 2;
  }
  const startedAt = new Date();
  const notes: string[] = [];
  const uptimeBefore = sh('uptime', []);
  const loadBefore = os.loadavg();
  const gitDirty = sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'machines', 'bin']).split('\n').filter(Boolean);
  const build: Record<string, unknown> = {
    bin: path.relative(ROOT, opts.bin),
    gitHead: sh('git', ['-C', ROOT, 'rev-parse', 'HEAD']),
    uncommittedProductFiles: gitDirty.map((l) => l.trim()),
  };
  if (opts.bin.endsWith(path.join('bin', 'etcd-mirror.js'))) {
    const cli = path.join(ROOT, 'dist/src/cli/cli.js');
    const stale = existsSync(cli) && statSync(cli).mtimeMs < newestTs([path.join(ROOT, 'src'), path.join(ROOT, 'machines')]);
    build.distStale = stale;
    if (stale) progress('warning: dist/ is older than src/ (run npm run build)');
  }
  const machine: Record<string, unknown> = {
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? null,
    kernel: os.release(),
    memTotalMb: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    etcd: sh('etcd', ['--version']).split('\n')[0] ?? null,
    clkTck: Number(sh('getconf', ['CLK_TCK'])) || null,
    uptimeBefore,
    loadavgBefore: loadBefore.map((x) => round(x, 2)),
    busiestProcessesBefore: await busiestProcesses(),
  };
  progress(`machine: ${machine.nproc} cores, kernel ${machine.kernel}, ${machine.etcd}; ${uptimeBefore}`);
  for (const p of machine.busiestProcessesBefore as { pid: number; cpuPercent: number; command: string }[]) {
    if (p.cpuPercent >= 10) progress(`  busy before the run: ${p.cpuPercent}% pid ${p.pid} ${p.command.slice(0, 80)}`);
  }
  progress(`destination: ${describeSpec(opts.dst)}`);
  progress(
    `options: rtt ${opts.rttMs} ms, rates ${opts.rates.join(',')}, ${opts.stepSeconds} s steps, modes ${opts.modes.join(',')}` +
      `${opts.skip.size ? `, skip ${[...opts.skip].join(',')}` : ''}, mirror ${path.relative(ROOT, opts.bin)}`,
  );
  const logDir = mkdtempSync(path.join(os.tmpdir(), 'etcd-mirror-bench-'));
  progress(`mirror logs in ${logDir}`);

  const baselines: WriteBaseline[] = [];
  const baseline = async (when: string) => {
    if (opts.skip.has('baseline')) return;
    try {
      baselines.push(await runWriteBaseline(opts, when));
    } catch (err) {
      notes.push(`write baseline (${when}) failed: ${String((err as Error)?.message ?? err)}`);
      progress(`baseline (${when}): FAILED: ${String((err as Error)?.message ?? err)}`);
    }
  };
  await baseline('start');
  const modes: ModeResult[] = [];
  for (const mode of opts.modes) modes.push(await runMode(mode, opts, logDir));
  await baseline('end');
  let reload: ReloadResult | null = null;
  if (!opts.skip.has('reload')) {
    try {
      reload = await runReload(opts, logDir);
    } catch (err) {
      notes.push(`reload run failed: ${String((err as Error)?.message ?? err)}`);
      progress(`reload: FAILED: ${String((err as Error)?.message ?? err)}`);
    }
  }
  machine.uptimeAfter = sh('uptime', []);
  machine.loadavgAfter = os.loadavg().map((x) => round(x, 2));
  machine.busiestProcessesAfter = await busiestProcesses();
  notes.push(
    'Each step writes the antagonist rate PLUS 10 canary writes/s into the mirrored prefix.',
    'busiestProcesses*: CPU % of one core over 2 s before and after the run, all processes on the machine (other work skews the figures).',
    'throughput.eventsAppliedPerSecond: delta of etcdmirror_events_applied_total between readings at the step\'s start and end; ' +
      'dstWritesPerSecond: growth of the destination X-Etcd-Index between the same readings (every destination write).',
    `throughput.backloggedEventsPerSecond: /state appliedIndex growth over the 0.5 s samples of the step in which the mirror was tailing with >= ${BACKLOG_EVENTS} events to apply; ` +
      'drainReplayEventsPerSecond: backlog at the step\'s end / time until appliedIndex reached the source index (antagonist stopped).',
    'ordering.*: deltas from the step\'s start until the bench stopped waiting for the mirror after the step (+0.6 s), i.e. the step and its drain.',
    `verdict 'past window': no out-of-window transition, but a sampled lag reached ${HISTORY_WINDOW_EVENTS} events (window headroom 0).`,
  );
  const finishedAt = new Date();
  const results: BenchResults = {
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    command: process.argv.length > 2 ? `npm run bench -- ${process.argv.slice(2).join(' ')}` : 'npm run bench',
    options: { ...opts, skip: [...opts.skip], bin: path.relative(ROOT, opts.bin), out: path.relative(ROOT, opts.out), mirrorLogs: logDir },
    machine,
    build,
    modes,
    writeBaseline: baselines,
    strictCeiling: strictCeiling(modes, baselines),
    destination: { ...opts.dst, description: describeSpec(opts.dst), quiet: quietOf(baselines[0]) },
    reload,
    targets: {},
    notes,
  };
  results.targets = evaluateTargets(results);

  mkdirSync(opts.out, { recursive: true });
  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const base = path.join(opts.out, `${stamp}-rtt${opts.rttMs}${opts.quick ? '-quick' : ''}`);
  writeFileSync(`${base}.json`, JSON.stringify(results, null, 1) + '\n');
  writeFileSync(`${base}.svg`, renderSvg(results));
  process.stdout.write(printTable(results));
  if (opts.dst.commitMs !== null) process.stdout.write('\n' + latencyTable(modes, baselines[0], opts));
  progress(`wrote ${path.relative(ROOT, base)}.json and .svg (${Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000)} s)`);
  return modes.some((m) => m.error) ? 1 : 0;
}

main().then(
  async (code) => {
    await cleanupAll();
    process.exit(code);
  },
  async (err: unknown) => {
    process.stderr.write(`bench: fatal: ${String((err as Error)?.stack ?? err)}\n`);
    await cleanupAll();
    process.exit(1);
  },
);
