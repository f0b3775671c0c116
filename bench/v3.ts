// `npm run bench -- --src-api v3 --dst-api v3`: etcd-mirror (v3 → v3) against etcdctl 3.4's make-mirror, in one
// run, on this machine. A benchmark, not a test: it measures and reports, it asserts nothing.
//
//   load generator (gRPC, direct) ──> source etcd ──(delay proxy, RTT/2 each way)──> peer ──> destination etcd
//   canary every 100 ms ──> source                          destination watch (arrival, order) <──┘
//
// First the source's own write ceiling (a fresh etcd, nothing else running). Then, for each peer, a fresh source,
// destination and proxy, and these phases, in this order:
//   a-live       canaries every 100 ms over a 1,000 put/s open-loop background load (latency, order, loss)
//   b-backlog    peer stopped, 10,000 puts, peer started again: time until the destination has everything
//   c-compact    peer stopped, puts, source compacted at its revision, peer started again: resumed or not
//   d-sustained  closed-loop load at the ceiling's concurrency: destination apply rate against the ceiling
// (the big phase last, so that make-mirror's full copies on restart copy tens of thousands of keys, not
// hundreds of thousands). Every load put goes to a unique key /bench/load/<phase>/<seq> and its source revision
// is kept, so the destination watch's order maps back to source order.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseCluster } from '../src/etcd/endpoint.js';
import { startEtcd, type EtcdProcess } from '../src/etcd/process.js';
import { V3Client } from '../src/etcd/v3/client.js';
import { busiestProcesses } from './lib/procstat.js';
import { cpuBetween, readCpu } from './lib/sampler.js';
import { round, roundSummary, summarize } from './lib/stats.js';
import {
  BENCH_PREFIX,
  compareTrees,
  countKeys,
  DestinationRecorder,
  epochNow,
  keySet,
  LOAD_DIR,
  orderCheck,
  writeV3Canaries,
  type TreeDiff,
} from './lib/v3-destination.js';
import { acksBetween, summarizeLoad, V3Load, loadKey, type V3LoadResult } from './lib/v3-load.js';
import { EtcdMirrorPeer, MakeMirrorPeer, PEERS, RssSampler, type Peer, type PeerName } from './lib/v3-peers.js';
import { histogramDelta } from './lib/mirror.js';
import {
  evaluateGoals,
  renderMarkdown,
  type BacklogResult,
  type CanaryResult,
  type CeilingResult,
  type CompactionResult,
  type OrderResult,
  type PeerResult,
  type SustainedResult,
  type V3BenchResults,
} from './lib/v3-report.js';
import { startDelayProxy } from './lib/workers.js';
import { describeSpec, sequentialV3, startDestination, type Destination, type DestinationSpec } from './lib/dst-cluster.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const HELP = `usage: npm run bench -- --src-api v3 --dst-api v3 [options]

etcd-mirror (v3 → v3) against etcdctl make-mirror (3.4), side by side, in one run:
source write ceiling, sustained mirror rate at that ceiling, canary latency, order and loss, backlog catch-up,
compaction while stopped, peer RSS.

  --rtt-ms N             round trip added between each peer and its source (default 30; N/2 each way)
  --seconds N            length of each load phase: ceiling, canaries, sustained (default 30; --quick 6)
  --quick                smoke run (~1-2 min): 6 s phases, shorter waits
  --out DIR              results directory (default bench/results)
  --peers LIST           etcd-mirror,make-mirror (default both)
  --concurrency N        puts in flight for the ceiling, the sustained phase and the backlog (default 64)
  --value-bytes N        value size of the load puts (default 100)
  --background-rate N    put/s under the canaries (default 1000)
  --canary-fractions L   after the canary phase, one more per fraction of the source's write ceiling (e.g.
                         0.1,0.5,0.9), a canary every 500 ms over background load making up the rest
  --backlog-events N     puts written while the peer is stopped (default 10000)
  --compaction-events N  puts written while the peer is stopped, before the compaction (default 1000)
  --drain-seconds N      a canary not on the destination this long after the phase's end is missing (default 10)
  --settle-seconds N     longest wait for a peer to catch up after a phase or a restart (default 60; --quick 20)
  --load-channels N      gRPC connections of the load generator (default 1)
  --bin PATH             etcd-mirror entry (default dist-bench/bench/mirror-entry.js, built with the bench)
  --mirror-args=ARGS     extra etcd-mirror flags, space-separated (the = is needed)
  --dst-commit-ms N      the destination is a three-member etcd whose raft peer links each pass through a delay
                         proxy (N/2 ms each way): one write at a time commits in about N ms (measured and printed)
  --dst-disk             with --dst-commit-ms: the members' data in os.tmpdir() (disk, fsync on), not /dev/shm
  -h, --help             this help

Prints a markdown table on stdout, progress on stderr; writes <out>/<ISO time>-v3-rtt<N>.json.
`;

interface Options {
  rttMs: number;
  seconds: number;
  quick: boolean;
  out: string;
  peers: PeerName[];
  concurrency: number;
  valueBytes: number;
  backgroundRate: number;
  canaryFractions: number[];
  backlogEvents: number;
  compactionEvents: number;
  drainSeconds: number;
  settleSeconds: number;
  loadChannels: number;
  bin: string;
  mirrorArgs: string[];
  dst: DestinationSpec;
}

function parseOptions(argv: string[]): Options | null {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      'src-api': { type: 'string' },
      'dst-api': { type: 'string' },
      'rtt-ms': { type: 'string' },
      seconds: { type: 'string' },
      quick: { type: 'boolean' },
      out: { type: 'string' },
      peers: { type: 'string' },
      concurrency: { type: 'string' },
      'value-bytes': { type: 'string' },
      'background-rate': { type: 'string' },
      'backlog-events': { type: 'string' },
      'compaction-events': { type: 'string' },
      'drain-seconds': { type: 'string' },
      'settle-seconds': { type: 'string' },
      'load-channels': { type: 'string' },
      bin: { type: 'string' },
      'mirror-args': { type: 'string' },
      'dst-commit-ms': { type: 'string' },
      'dst-disk': { type: 'boolean' },
      'canary-fractions': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(HELP);
    return null;
  }
  if (v['src-api'] !== 'v3' || (v['dst-api'] ?? 'v3') !== 'v3') throw new Error('this bench runs --src-api v3 --dst-api v3 only');
  const quick = v.quick ?? false;
  const num = (raw: string | undefined, flag: string, dflt: number, min: number, max: number): number => {
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${flag}: expected a number from ${min} to ${max}`);
    return n;
  };
  const peers: PeerName[] = [];
  for (const raw of (v.peers ?? PEERS.join(',')).split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(PEERS as readonly string[]).includes(raw)) throw new Error(`--peers: unknown ${raw} (${PEERS.join(', ')})`);
    if (!peers.includes(raw as PeerName)) peers.push(raw as PeerName);
  }
  return {
    rttMs: num(v['rtt-ms'], '--rtt-ms', 30, 0, 10_000),
    seconds: num(v.seconds, '--seconds', quick ? 6 : 30, 2, 3_600),
    quick,
    out: path.resolve(ROOT, v.out ?? 'bench/results'),
    peers,
    concurrency: Math.round(num(v.concurrency, '--concurrency', 64, 1, 4_096)),
    valueBytes: Math.round(num(v['value-bytes'], '--value-bytes', 100, 16, 1_000_000)),
    backgroundRate: num(v['background-rate'], '--background-rate', 1000, 1, 100_000),
    canaryFractions: (v['canary-fractions'] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((f) => num(f, '--canary-fractions', 0, 0.01, 1)),
    backlogEvents: Math.round(num(v['backlog-events'], '--backlog-events', 10_000, 1, 1_000_000)),
    compactionEvents: Math.round(num(v['compaction-events'], '--compaction-events', 1_000, 1, 1_000_000)),
    drainSeconds: num(v['drain-seconds'], '--drain-seconds', quick ? 5 : 10, 1, 600),
    settleSeconds: num(v['settle-seconds'], '--settle-seconds', quick ? 20 : 60, 1, 3_600),
    loadChannels: Math.round(num(v['load-channels'], '--load-channels', 1, 1, 64)),
    bin: path.resolve(ROOT, v.bin ?? 'dist-bench/bench/mirror-entry.js'),
    mirrorArgs: (v['mirror-args'] ?? '').split(/\s+/).filter(Boolean),
    dst: {
      commitMs: v['dst-commit-ms'] === undefined ? null : num(v['dst-commit-ms'], '--dst-commit-ms', 0, 0, 1_000),
      disk: v['dst-disk'] ?? false,
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Progress, undo steps

const started = performance.now();
function progress(msg: string): void {
  const s = Math.floor((performance.now() - started) / 1000);
  process.stderr.write(`[bench v3 ${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}\n`);
}

/** Undo steps, run last-in first-out (each at most once), also after an error. */
class Undo {
  readonly #steps: (() => Promise<unknown>)[] = [];
  add(step: () => Promise<unknown>): void {
    this.#steps.push(step);
  }
  async runAll(): Promise<void> {
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
      await step().catch((err: unknown) => progress(`cleanup failed: ${String((err as Error)?.message ?? err)}`));
    }
  }
}

const errText = (err: unknown): string => String((err as Error)?.message ?? err);

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** Polls `pred` every `everyMs` until it holds (returns the epoch ms it did) or `timeoutMs` passed (null). */
async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<number | null> {
  const deadline = epochNow() + timeoutMs;
  for (;;) {
    if (await pred()) return epochNow();
    if (epochNow() >= deadline) return null;
    await sleep(everyMs);
  }
}

const client = (url: string, name: string) => new V3Client(parseCluster(url, name));

// ---------------------------------------------------------------------------------------------------------------
// 1. The source's write ceiling: a fresh etcd, the load generator alone.

async function measureCeiling(opts: Options, seconds: number, when: 'before' | 'after'): Promise<CeilingResult> {
  const undo = new Undo();
  try {
    const etcd = await startEtcd({ name: `v3-ceiling-${when}` });
    undo.add(() => etcd.stop());
    const load = new V3Load({ url: etcd.clientUrl, channels: opts.loadChannels });
    undo.add(() => load.close());
    progress(`ceiling (${when} the peers): warming up (1 s), then ${seconds} s of ${opts.concurrency} puts in flight against a fresh etcd`);
    await load.run({ loop: 'closed', concurrency: opts.concurrency, seconds: 1, keyPrefix: `${LOAD_DIR}/warmup`, valueBytes: opts.valueBytes });
    const cpu0 = readCpu({ srcEtcd: etcd.pid });
    const r = await load.run({ loop: 'closed', concurrency: opts.concurrency, seconds, keyPrefix: `${LOAD_DIR}/ceiling`, valueBytes: opts.valueBytes });
    const cpu = cpuBetween(cpu0, readCpu({ srcEtcd: etcd.pid }));
    const summary = summarizeLoad(r);
    progress(
      `ceiling (${when}): ${summary.putsPerSecond} put/s (${summary.acked} acked, ${summary.errors} errors; ack p50 ${summary.ackLatencyMs.p50} ms, ` +
        `p99 ${summary.ackLatencyMs.p99} ms; etcd CPU ${cpu.srcEtcd ?? '–'}%, bench ${cpu.bench}%, machine ${cpu.machineBusy}% busy)`,
    );
    return { when, seconds, concurrency: opts.concurrency, valueBytes: opts.valueBytes, load: summary, putsPerSecond: summary.putsPerSecond, cpuPercent: cpu };
  } finally {
    await undo.runAll();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. One peer: fresh source, destination, proxy; the phases.

interface PeerCtx {
  opts: Options;
  ceiling: number | null;
  src: EtcdProcess;
  dst: Destination;
  srcClient: V3Client;
  dstClient: V3Client;
  load: V3Load;
  recorder: DestinationRecorder;
  peer: Peer;
  rss: RssSampler;
  /** The load runs whose order and loss are checked, by phase. */
  runs: Map<string, V3LoadResult>;
  readySeq: number;
}

const isEtcdMirror = (p: Peer): p is EtcdMirrorPeer => p.name === 'etcd-mirror';

/** The peer is started; waits until it is replicating: a marker written on the source now reaches the destination. */
async function waitReplicating(ctx: PeerCtx, timeoutMs: number): Promise<number | null> {
  const { peer, srcClient, dstClient } = ctx;
  const t0 = epochNow();
  if (isEtcdMirror(peer)) {
    const s = await peer.current!.waitState((st) => st.state === 'tailing', timeoutMs);
    if (!s) return null;
  }
  const marker = Buffer.from(`ready-${ctx.readySeq++}`);
  const key = Buffer.from('/bench/ready');
  await srcClient.put(key, marker);
  const at = await waitUntil(async () => {
    if (!peer.alive) return true;
    const { kvs } = await dstClient.range(key);
    return kvs[0]?.value.equals(marker) ?? false;
  }, Math.max(1_000, timeoutMs - (epochNow() - t0)), 20);
  return at !== null && peer.alive ? at - t0 : null;
}

/** Waits until the destination watch has seen every acknowledged put of `run` (bounded). */
function waitObserved(ctx: PeerCtx, phase: string, run: V3LoadResult, timeoutMs: number): Promise<number | null> {
  const arrivals = ctx.recorder.phase(phase);
  return waitUntil(() => arrivals.order.length >= run.acked, timeoutMs, 20);
}

interface CanarySpec {
  phase: string;
  /** Background put/s. */
  rate: number;
  everyMs: number;
  firstSeq: number;
  /** Of the source's ceiling, with the canaries (--canary-fractions). */
  fraction?: number;
}

/** A canary every 500 ms in a fraction phase: a rare write, next to a load that is the rest of the offered rate. */
const RARE_CANARY_MS = 500;

async function canaryPhase(ctx: PeerCtx, spec: CanarySpec = { phase: 'a-live', rate: ctx.opts.backgroundRate, everyMs: 100, firstSeq: 1 }): Promise<CanaryResult> {
  const { opts, recorder } = ctx;
  const { phase } = spec;
  progress(`${ctx.peer.name}: canaries every ${spec.everyMs} ms for ${opts.seconds} s over ${spec.rate} put/s of background load`);
  const mirror = isEtcdMirror(ctx.peer) ? ctx.peer.current : null;
  const before = await mirror?.metrics().catch(() => null);
  const [bg, canaries] = await Promise.all([
    ctx.load.run({ loop: 'open', rate: spec.rate, seconds: opts.seconds, concurrency: 1_000, keyPrefix: `${LOAD_DIR}/${phase}`, valueBytes: opts.valueBytes }),
    writeV3Canaries(ctx.srcClient, spec.firstSeq, opts.seconds, spec.everyMs),
  ]);
  ctx.runs.set(phase, bg);
  const end = epochNow();
  const deadline = end + opts.drainSeconds * 1000;
  const acked = canaries.filter((c) => c.ackAt !== null);
  await waitUntil(() => acked.every((c) => recorder.canaryArrivals.has(c.seq)) && recorder.phase(phase).order.length >= bg.acked, deadline - epochNow(), 50);
  const latency: number[] = [];
  const fromSend: number[] = [];
  const unseen: number[] = [];
  for (const c of acked) {
    const at = recorder.canaryArrivals.get(c.seq);
    if (at !== undefined && at <= deadline) {
      latency.push(at - c.ackAt!);
      fromSend.push(at - c.sentAt);
    } else unseen.push(c.seq);
  }
  let presentUnobserved = 0;
  if (unseen.length) {
    const onDst = await keySet(ctx.dstClient, '/bench/canary/').catch(() => new Set<string>());
    presentUnobserved = unseen.filter((seq) => onDst.has(`/bench/canary/${seq}`) && !recorder.canaryArrivals.has(seq)).length;
  }
  const result: CanaryResult = {
    seconds: opts.seconds,
    everyMs: spec.everyMs,
    ...(spec.fraction === undefined ? {} : { fraction: spec.fraction }),
    background: summarizeLoad(bg),
    written: canaries.length,
    acked: acked.length,
    seen: latency.length,
    missing: unseen.length - presentUnobserved,
    presentUnobserved,
    latencyMs: roundSummary(summarize(latency), 2),
    fromSendMs: roundSummary(summarize(fromSend), 2),
    inside: null,
  };
  const after = await mirror?.metrics().catch(() => null);
  if (before && after) {
    const wait = histogramDelta(before, after, 'etcdmirror_event_wait_seconds');
    const own = histogramDelta(before, after, 'etcdmirror_event_overhead_seconds');
    const write = histogramDelta(before, after, 'etcdmirror_write_latency');
    const lag = after.sums.get('etcdmirror_process_nodejs_eventloop_lag_p99_seconds');
    result.inside = {
      waitP50: wait?.p50AtMostMs ?? null,
      waitP99: wait?.p99AtMostMs ?? null,
      overheadP50: own?.p50AtMostMs ?? null,
      overheadP99: own?.p99AtMostMs ?? null,
      writeP50: write?.p50AtMostMs ?? null,
      writeP99: write?.p99AtMostMs ?? null,
      loopDelayP99: lag === undefined ? null : round(lag * 1000, 2),
    };
  }
  const l = result.latencyMs;
  progress(
    `${ctx.peer.name}: canaries ${result.seen}/${result.acked} seen, latency p50 ${l.p50} p99 ${l.p99} max ${l.max} ms, missing ${result.missing}; ` +
      `background ${result.background.putsPerSecond} put/s (${result.background.notSent} not sent, ${result.background.errors} errors)`,
  );
  return result;
}

/** Writes `n` puts under `phase` with the peer stopped; returns the run and the source revision after it. */
async function writeWhileStopped(ctx: PeerCtx, phase: string, n: number): Promise<{ run: V3LoadResult; revision: number }> {
  const run = await ctx.load.run({ loop: 'closed', concurrency: ctx.opts.concurrency, maxPuts: n, seconds: 300, keyPrefix: `${LOAD_DIR}/${phase}`, valueBytes: ctx.opts.valueBytes });
  ctx.runs.set(phase, run);
  return { run, revision: (await ctx.srcClient.status()).revision };
}

/** Stops the peer once the destination has what the previous phase wrote (bounded wait). */
async function settleAndStop(ctx: PeerCtx, phase: string): Promise<void> {
  const prev = ctx.runs.get(phase);
  if (prev && ctx.peer.alive) {
    const ok = await waitObserved(ctx, phase, prev, ctx.opts.settleSeconds * 1000);
    if (ok === null) progress(`${ctx.peer.name}: not caught up with ${phase} ${ctx.opts.settleSeconds} s later; stopping it anyway`);
  }
  const peer = ctx.peer;
  if (isEtcdMirror(peer) && peer.alive) {
    // The stored checkpoint should be the source revision: etcd-mirror stores it at least every --checkpoint-ms.
    const target = (await ctx.srcClient.status()).revision;
    await peer.current!.waitState((s) => (s.appliedIndex ?? -1) >= target, 5_000);
  }
  await peer.stop();
}

async function backlogPhase(ctx: PeerCtx): Promise<BacklogResult> {
  const { opts, peer, recorder } = ctx;
  const phase = 'b-backlog';
  await settleAndStop(ctx, 'a-live');
  progress(`${peer.name}: stopped (exit ${JSON.stringify(peer.lastExit)}); writing ${opts.backlogEvents} events to the source`);
  const { run, revision } = await writeWhileStopped(ctx, phase, opts.backlogEvents);
  const sourceKeys = await countKeys(ctx.srcClient, BENCH_PREFIX);
  const events0 = recorder.events;
  const arrivals = recorder.phase(phase);
  const states = new Set<string>();
  const out: BacklogResult = {
    events: opts.backlogEvents, write: summarizeLoad(run), sourceRevision: revision, sourceKeys,
    criterion: isEtcdMirror(peer) ? '/state appliedIndex ≥ the source revision after the writes' : 'every backlog key on the destination (the contents then compared)',
    doneMs: null, fromUpMs: null, watchSawAllMs: null, destinationWrites: 0, diff: null, statesSeen: [], error: null,
  };
  progress(`${peer.name}: source at revision ${revision} (${sourceKeys} keys under /bench/); starting the peer again`);
  const spawnAt = epochNow();
  await peer.start(false);
  const timeoutMs = opts.settleSeconds * 1000 + (isEtcdMirror(peer) ? 0 : 30_000);
  let upAt: number | null = null;
  let doneAt: number | null = null;
  let sawAllAt: number | null = null;
  const deadline = spawnAt + timeoutMs;
  while (epochNow() < deadline && peer.alive) {
    if (sawAllAt === null && arrivals.order.length >= run.acked) sawAllAt = epochNow();
    if (isEtcdMirror(peer)) {
      const s = await peer.current!.state().catch(() => null);
      if (s) {
        upAt ??= epochNow();
        states.add(s.state);
        if ((s.appliedIndex ?? -1) >= revision) {
          doneAt = epochNow();
          break;
        }
      }
    } else if (sawAllAt !== null) {
      doneAt = sawAllAt;
      break;
    }
    await sleep(10);
  }
  if (doneAt !== null) {
    out.doneMs = round(doneAt - spawnAt, 0);
    out.fromUpMs = upAt === null ? null : round(doneAt - upAt, 0);
    sawAllAt ??= await waitUntil(() => arrivals.order.length >= run.acked, 10_000, 10);
    out.watchSawAllMs = sawAllAt === null ? null : round(sawAllAt - spawnAt, 0);
    // make-mirror keeps copying keys that sort after the backlog's: compare once it is quiet.
    if (!isEtcdMirror(peer)) await waitUntil(() => recorder.events - events0 >= sourceKeys, 30_000, 100);
    out.destinationWrites = recorder.events - events0;
    out.diff = await compareTrees(ctx.srcClient, ctx.dstClient).catch(() => null);
  } else {
    out.error = peer.alive ? `not done within ${timeoutMs / 1000} s` : `peer exited (${JSON.stringify(peer.lastExit)})`;
    out.destinationWrites = recorder.events - events0;
  }
  out.statesSeen = [...states];
  progress(
    `${peer.name}: backlog of ${opts.backlogEvents}: ${out.doneMs ?? '–'} ms after the spawn (${out.fromUpMs ?? '–'} ms after its first /state answer), ` +
      `watch saw all after ${out.watchSawAllMs ?? '–'} ms, ${out.destinationWrites} destination writes; destination ${out.diff ? (out.diff.equal ? 'equals' : 'DIFFERS from') : '?'} the source${out.error ? `; ${out.error}` : ''}`,
  );
  return out;
}

async function compactionPhase(ctx: PeerCtx): Promise<CompactionResult> {
  const { opts, peer, recorder } = ctx;
  const phase = 'c-compact';
  await settleAndStop(ctx, 'b-backlog');
  const { run, revision } = await writeWhileStopped(ctx, phase, opts.compactionEvents);
  await ctx.srcClient.compact(revision);
  const sourceKeys = await countKeys(ctx.srcClient, BENCH_PREFIX);
  progress(`${peer.name}: stopped; ${opts.compactionEvents} events written, source compacted at revision ${revision}; starting the peer again`);
  const events0 = recorder.events;
  const arrivals = recorder.phase(phase);
  const states = new Set<string>();
  const spawnAt = epochNow();
  await peer.start(false);
  const deadline = spawnAt + opts.settleSeconds * 1000 + (isEtcdMirror(peer) ? 0 : 30_000);
  let doneAt: number | null = null;
  while (epochNow() < deadline && peer.alive) {
    const all = arrivals.order.length >= run.acked;
    if (isEtcdMirror(peer)) {
      const s = await peer.current!.state().catch(() => null);
      if (s) states.add(s.state);
      if (all && s && s.state === 'tailing' && (s.appliedIndex ?? -1) >= revision) doneAt = epochNow();
    } else if (all) doneAt = epochNow();
    if (doneAt !== null) break;
    await sleep(25);
  }
  // A peer that gives up may take a moment to exit.
  if (doneAt === null && peer.alive) await waitUntil(() => !peer.alive, 2_000, 50);
  const exitCode = peer.alive ? null : (peer.lastExit?.code ?? null);
  const resyncLogged = isEtcdMirror(peer) && peer.current!.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('destination reconciled'));
  // make-mirror's full copy goes on with the keys that sort after these: until it has written every key.
  if (!isEtcdMirror(peer) && doneAt !== null) await waitUntil(() => recorder.events - events0 >= sourceKeys, Math.max(1_000, deadline - epochNow()), 100);
  const diff = doneAt !== null ? await compareTrees(ctx.srcClient, ctx.dstClient).catch(() => null) : null;
  const writes = recorder.events - events0;
  const ms = doneAt === null ? null : round(doneAt - spawnAt, 0);
  let outcome: string;
  if (doneAt === null) outcome = peer.alive ? `stuck: not caught up within the wait` : `exited (code ${exitCode})`;
  else if (isEtcdMirror(peer)) {
    const resynced = resyncLogged || ['outOfWindow', 'recovering', 'reloading'].some((s) => states.has(s));
    outcome = resynced ? 'resumed (resynced from a snapshot by itself)' : 'resumed';
  } else outcome = `no resume: full copy again (${writes} destination writes)`;
  const result: CompactionResult = {
    eventsWhileStopped: opts.compactionEvents, compactRevision: revision, outcome, resumed: doneAt !== null && peer.alive,
    exitCode, doneMs: ms, statesSeen: [...states], resyncLogged, destinationWrites: writes, diff, restartedAfter: null,
  };
  progress(`${peer.name}: compaction restart: ${outcome}${ms !== null ? ` after ${ms} ms` : ''}; destination ${diff ? (diff.equal ? 'equals' : 'DIFFERS from') : '?'} the source`);
  if (!peer.alive) {
    result.restartedAfter = `peer exited (${JSON.stringify(peer.lastExit)}): started again${isEtcdMirror(peer) ? ' with --reload' : ''} for the sustained phase`;
    progress(`${peer.name}: ${result.restartedAfter}`);
    await peer.start(true);
    if ((await waitReplicating(ctx, 120_000)) === null) throw new Error(`${peer.name}: not replicating 120 s after the restart`);
  }
  return result;
}

async function sustainedPhase(ctx: PeerCtx): Promise<SustainedResult> {
  const { opts, peer, recorder } = ctx;
  const phase = 'd-sustained';
  if (ctx.runs.has('c-compact')) await waitObserved(ctx, 'c-compact', ctx.runs.get('c-compact')!, opts.settleSeconds * 1000);
  progress(`${peer.name}: sustained: ${opts.concurrency} puts in flight for ${opts.seconds} s (the ceiling's load)`);
  const pids = () => ({ peer: peer.pid, srcEtcd: ctx.src.pid, dstEtcd: ctx.dst.pid });
  // etcd-mirror's checkpoint (/state appliedIndex) every 250 ms.
  const checkpoints: [number, number][] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling && isEtcdMirror(peer)) {
      const s = await peer.current!.state().catch(() => null);
      if (s?.appliedIndex != null) checkpoints.push([epochNow(), s.appliedIndex]);
      await sleep(250);
    }
  })();
  const cpu0 = readCpu(pids());
  const run = await ctx.load.run({ loop: 'closed', concurrency: opts.concurrency, seconds: opts.seconds, keyPrefix: `${LOAD_DIR}/${phase}`, valueBytes: opts.valueBytes });
  const cpu = cpuBetween(cpu0, readCpu(pids()));
  ctx.runs.set(phase, run);
  // The steady part: from 20 % into the load (at least 1 s) to its end.
  const from = run.startedAt + Math.max(1_000, opts.seconds * 200);
  const to = run.sendEndedAt;
  const secs = Math.max(0.001, (to - from) / 1000);
  const destinationEventsPerSecond = round(recorder.eventsBetween(from, to) / secs, 1);
  const sourcePutsPerSecond = round(acksBetween(run, from, to) / secs, 1);
  const caughtAt = await waitObserved(ctx, phase, run, opts.settleSeconds * 1000);
  const cpu1 = readCpu(pids());
  const peerCpuSeconds = ((cpuBetween(cpu0, cpu1).peer ?? Number.NaN) / 100) * ((cpu1.at - cpu0.at) / 1000);
  const applied = recorder.phase(phase).order.length;
  sampling = false;
  await sampler;
  let checkpointRevisionsPerSecond: number | null = null;
  const a = checkpoints.find(([t]) => t >= from);
  const b = [...checkpoints].reverse().find(([t]) => t <= to);
  if (a && b && b[0] - a[0] >= 500) checkpointRevisionsPerSecond = round((b[1] - a[1]) / ((b[0] - a[0]) / 1000), 1);
  const result: SustainedResult = {
    seconds: opts.seconds,
    load: summarizeLoad(run),
    window: { from: round((from - run.startedAt) / 1000, 2), to: round((to - run.startedAt) / 1000, 2) },
    sourcePutsPerSecond,
    destinationEventsPerSecond,
    percentOfCeiling: ctx.ceiling ? round((destinationEventsPerSecond / ctx.ceiling) * 100, 1) : null,
    percentOfSource: sourcePutsPerSecond > 0 ? round((destinationEventsPerSecond / sourcePutsPerSecond) * 100, 1) : null,
    checkpointRevisionsPerSecond,
    destinationPerSecond: recorder.perSecond(run.startedAt, caughtAt ?? epochNow()),
    caughtUpMs: caughtAt === null ? null : round(Math.max(0, caughtAt - to), 0),
    behindAtEnd: Math.max(0, run.acked - recorder.phase(phase).order.length),
    waitedSeconds: round((epochNow() - to) / 1000, 1),
    cpuPercent: cpu,
    cpuMicrosPerEvent: applied > 0 && Number.isFinite(peerCpuSeconds) ? round((peerCpuSeconds * 1e6) / applied, 1) : null,
  };
  progress(
    `${peer.name}: sustained: source ${result.sourcePutsPerSecond} put/s, destination ${destinationEventsPerSecond} events/s over the steady part ` +
      `(${result.percentOfCeiling ?? '–'} % of the ceiling; checkpoint ${checkpointRevisionsPerSecond ?? '–'} rev/s), caught up ` +
      `${result.caughtUpMs === null ? `no (${result.behindAtEnd} behind after ${result.waitedSeconds} s)` : `${result.caughtUpMs} ms after the load`}; ` +
      `peer CPU ${cpu.peer ?? '–'}% (${result.cpuMicrosPerEvent ?? '–'} µs per applied event until caught up), src ${cpu.srcEtcd ?? '–'}%, dst ${cpu.dstEtcd ?? '–'}%, bench ${cpu.bench}%, machine ${cpu.machineBusy}% busy`,
  );
  return result;
}

/** Order and loss of each phase's puts, from the destination watch (loss confirmed against the destination). */
async function checkOrder(ctx: PeerCtx, caughtUp: Map<string, boolean>): Promise<OrderResult[]> {
  const out: OrderResult[] = [];
  for (const [phase, run] of ctx.runs) {
    const arrivals = ctx.recorder.phases.get(phase);
    const { checked, inversions, unseen } = orderCheck(run.revisions, arrivals);
    let presentUnobserved = 0;
    let stillUnseen = unseen.length;
    if (unseen.length) {
      const onDst = await keySet(ctx.dstClient, `${LOAD_DIR}/${phase}/`).catch(() => null);
      if (onDst) {
        presentUnobserved = unseen.filter((seq) => onDst.has(loadKey(`${LOAD_DIR}/${phase}`, seq))).length;
        stillUnseen = unseen.length - presentUnobserved;
      }
    }
    const done = caughtUp.get(phase) ?? true;
    out.push({
      phase,
      acked: run.acked,
      checked,
      inversions,
      lost: done ? stillUnseen : null,
      presentUnobserved,
      notAppliedYet: done ? 0 : stillUnseen,
      repeats: arrivals?.repeats ?? 0,
    });
  }
  return out;
}

async function runPeer(name: PeerName, opts: Options, ceiling: number | null, logDir: string): Promise<PeerResult> {
  const undo = new Undo();
  const logFile = path.join(logDir, `${name}.log`);
  const result: PeerResult = {
    peer: name, command: [], logFile, readyMs: null, canary: null, backlog: null, compaction: null, sustained: null, order: [],
    rssMb: { max: null, end: null }, finalDiff: null, processes: 0, problems: null,
    destinationWatch: { events: 0, restarts: 0, errors: [] }, error: null,
  };
  let ctx: PeerCtx | undefined;
  try {
    progress(`${name}: starting a fresh source and destination etcd`);
    const [src, dst] = await Promise.all([startEtcd({ name: `v3-${name}-src` }), startDestination(`v3-${name}-dst`, opts.dst)]);
    undo.add(() => Promise.all([src.stop(), dst.stop()]));
    const srcUrl = new URL(src.clientUrl);
    const proxy = await startDelayProxy({ host: srcUrl.hostname, port: Number(srcUrl.port) }, opts.rttMs / 2);
    undo.add(() => proxy.close());
    const srcClient = client(src.clientUrl, 'source');
    const dstClient = client(dst.clientUrl, 'destination');
    undo.add(() => Promise.all([srcClient.close(), dstClient.close()]));
    const load = new V3Load({ url: src.clientUrl, channels: opts.loadChannels });
    undo.add(() => load.close());
    if (opts.dst.commitMs !== null) {
      const one = await sequentialV3(dstClient, 3, name);
      result.destinationOneAtATime = one;
      progress(`${name}: destination (${dst.description}): one put at a time ${one.writesPerSecond}/s, p50 ${one.p50Ms} ms, p99 ${one.p99Ms} ms`);
    }
    const recorder = new DestinationRecorder(dstClient);
    recorder.start((await dstClient.status()).revision + 1);
    undo.add(() => recorder.stop());
    const target = { sourceUrl: proxy.url, destinationUrl: dst.clientUrl, logFile };
    const peer: Peer = name === 'etcd-mirror' ? new EtcdMirrorPeer(opts.bin, target, opts.mirrorArgs) : new MakeMirrorPeer(target);
    undo.add(() => peer.stop());
    const rss = new RssSampler(() => peer.pid);
    undo.add(async () => rss.stop());
    ctx = { opts, ceiling, src, dst, srcClient, dstClient, load, recorder, peer, rss, runs: new Map(), readySeq: 1 };

    await peer.start(true);
    result.command = peer.command;
    const readyMs = await waitReplicating(ctx, 120_000);
    result.readyMs = readyMs === null ? null : round(readyMs, 0);
    if (result.readyMs === null) throw new Error(`${name} not replicating 120 s after its start (exit ${JSON.stringify(peer.lastExit)})`);
    progress(`${name}: replicating ${result.readyMs} ms after its start (pid ${peer.pid}; source via ${proxy.url}, +${opts.rttMs / 2} ms each way)`);

    result.canary = await canaryPhase(ctx);
    result.backlog = await backlogPhase(ctx);
    result.compaction = await compactionPhase(ctx);
    result.sustained = await sustainedPhase(ctx);
    // Last, so that their keys do not grow the prefix the compaction restart resyncs.
    if (opts.canaryFractions.length && ctx.ceiling) {
      result.canaryFractions = [];
      for (const [i, fraction] of opts.canaryFractions.entries()) {
        const rate = Math.max(1, Math.round(fraction * ctx.ceiling - 1000 / RARE_CANARY_MS));
        const phase = `a-live-${Math.round(fraction * 100)}pct`;
        result.canaryFractions.push(await canaryPhase(ctx, { phase, rate, everyMs: RARE_CANARY_MS, firstSeq: 100_000 * (i + 1), fraction }));
      }
    }
    rss.sample();
    result.rssMb = { max: rss.maxMb, end: peer.alive ? rss.lastMb : null };
    const caughtUp = new Map<string, boolean>([
      ['d-sustained', result.sustained.caughtUpMs !== null],
      ['b-backlog', result.backlog.doneMs !== null],
      ['c-compact', result.compaction.doneMs !== null],
    ]);
    result.order = await checkOrder(ctx, caughtUp);
    for (const o of result.order) {
      progress(`${name}: ${o.phase}: ${o.inversions} inversions in ${o.checked} first arrivals, lost ${o.lost ?? `n/a (${o.notAppliedYet} not applied yet)`}, ${o.repeats} repeated puts`);
    }
    if (result.sustained.caughtUpMs !== null) {
      result.finalDiff = await compareTrees(srcClient, dstClient).catch(() => null);
      progress(`${name}: destination ${result.finalDiff ? (result.finalDiff.equal ? 'equals' : 'DIFFERS from') : '?'} the source at the end (${result.finalDiff?.sourceKeys ?? '?'} keys)`);
    }
  } catch (err) {
    result.error = String((err as Error)?.stack ?? err);
    progress(`${name}: FAILED: ${errText(err)}`);
  } finally {
    if (ctx) {
      ctx.rss.sample();
      result.rssMb.max = ctx.rss.maxMb;
      result.processes = ctx.peer.spawns;
      result.destinationWatch = { events: ctx.recorder.events, restarts: ctx.recorder.restarts, errors: ctx.recorder.errors };
    }
    await undo.runAll();
    if (ctx && isEtcdMirror(ctx.peer)) result.problems = ctx.peer.problems();
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------

export async function runV3Bench(argv: string[]): Promise<number> {
  let opts: Options | null;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench: ${errText(err)}\n${HELP}`);
    return 2;
  }
  if (!opts) return 0;
  const startedAt = new Date();
  const command = `npm run bench -- ${argv.join(' ')}`;
  const cores = os.cpus().length;
  const machine: Record<string, unknown> = {
    cores,
    availableParallelism: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? null,
    kernel: os.release(),
    memTotalMb: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    etcd: sh('etcd', ['--version']).split('\n')[0] ?? null,
    etcdctl: sh('etcdctl', ['version']).split('\n')[0] ?? null,
    gitHead: sh('git', ['-C', ROOT, 'rev-parse', 'HEAD']),
    uncommittedProductFiles: sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'machines', 'bin']).split('\n').filter(Boolean).map((l) => l.trim()),
    loadavgBefore: os.loadavg().map((x) => round(x, 2)),
    busiestProcessesBefore: await busiestProcesses(),
  };
  progress(`${startedAt.toISOString()}: ${cores} cores, ${machine.etcd}, ${machine.etcdctl}; command: ${command}`);
  for (const p of machine.busiestProcessesBefore as { pid: number; cpuPercent: number; command: string }[]) {
    if (p.cpuPercent >= 10) progress(`  busy before the run: ${p.cpuPercent}% pid ${p.pid} ${p.command.slice(0, 80)}`);
  }
  machine.destination = describeSpec(opts.dst);
  progress(`destination: ${machine.destination}`);
  const logDir = mkdtempSync(path.join(os.tmpdir(), 'etcd-mirror-bench-v3-'));
  progress(`peer logs in ${logDir}`);
  const notes: string[] = [];

  const ceilingOf = async (seconds: number, when: 'before' | 'after'): Promise<CeilingResult | null> => {
    try {
      return await measureCeiling(opts, seconds, when);
    } catch (err) {
      notes.push(`ceiling measurement (${when} the peers) failed: ${errText(err)}`);
      progress(`ceiling (${when}): FAILED: ${errText(err)}`);
      return null;
    }
  };
  const ceiling = await ceilingOf(opts.seconds, 'before');
  const peers: PeerResult[] = [];
  for (const name of opts.peers) peers.push(await runPeer(name, opts, ceiling?.putsPerSecond ?? null, logDir));
  // Again, shorter, after the peers: how much the machine's other work moved the ceiling during the run.
  const ceilingAfter = await ceilingOf(Math.min(opts.seconds, 10), 'after');

  machine.loadavgAfter = os.loadavg().map((x) => round(x, 2));
  notes.push(
    'Ceiling: closed loop, --concurrency puts in flight on one gRPC load generator (a worker thread of this process) against a fresh etcd with nothing else running.',
    'Sustained: the same load against the peer\'s source while the peer runs; destination events/s counted by a watch on the destination\'s /bench/ over the steady part (20 % into the load to its end).',
    'Order: load keys are unique; each put\'s source revision comes from its answer. An inversion is a first arrival on the destination whose source revision is below one that arrived before it.',
    'Backlog and compaction keys sort after the earlier phases\' keys, so make-mirror\'s full copy (key order) writes them last.',
    'Canary latency: destination watch arrival − source ack, in this process; missing: not on the destination --drain-seconds after the phase.',
  );
  const results: V3BenchResults = {
    version: 1,
    kind: 'v3',
    date: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command,
    cores,
    machine,
    options: { ...opts, bin: path.relative(ROOT, opts.bin), out: path.relative(ROOT, opts.out), peerLogs: logDir },
    ceiling,
    ceilingAfter,
    peers,
    goals: [],
    notes,
  };
  results.goals = evaluateGoals(results, opts.rttMs);
  mkdirSync(opts.out, { recursive: true });
  const stamp = startedAt.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  const file = path.join(opts.out, `${stamp}-v3-rtt${opts.rttMs}.json`);
  writeFileSync(file, JSON.stringify(results, null, 1) + '\n');
  process.stdout.write(renderMarkdown({ ...results, notes: [] }));
  progress(`wrote ${path.relative(ROOT, file)} (${Math.round((Date.now() - startedAt.getTime()) / 1000)} s)`);
  return peers.some((p) => p.error) || !ceiling ? 1 : 0;
}
